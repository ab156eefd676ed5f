"""The InfluxDB 3 Core stand-in keeps the contract in ../shared/influxdb3-api.md, over real HTTP.

Every test starts its own stand-in on a free port, so the tests share nothing. Error bodies are
checked byte for byte where the contract gives them, including the missing Content-Type.
"""
