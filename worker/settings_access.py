"""Who may call the operator API, the console and the locations API, and how: the settings of
access (tokens, sessions, TLS, Flower), declared like the rest (``worker.settings_table``)."""

from __future__ import annotations

from worker.settings_rules import Setting, link_url

ACCESS: tuple[Setting, ...] = (
    Setting(
        "OPERATOR_TOKEN",
        "operator_token",
        file_variable="OPERATOR_TOKEN_FILE",
        help="required by the operator API; at least 32 characters",
    ),
    Setting(
        "LOCATIONS_TOKEN",
        "locations_token",
        file_variable="LOCATIONS_TOKEN_FILE",
        help="`/locations`' read-only credential, 32+ characters (unset: 401 to all)",
    ),
    Setting(
        "LOCATIONS_REFRESH_SECONDS",
        "locations_refresh_seconds",
        float,
        2.0,
        minimum=0.1,
        unit="s",
        help="how often a location client asks for changes (a hint in every answer)",
    ),
    Setting(
        "LOCATIONS_MAX_STALENESS_SECONDS",
        "locations_max_staleness_seconds",
        float,
        10.0,
        minimum=0,
        unit="s",
        help="a deletion waits this long after publishing it, then deletes the database",
    ),
    Setting(
        "CONSOLE_SESSION_MINUTES",
        "console_session_minutes",
        int,
        480,
        minimum=1,
        unit="min",
        help="the longest a console sign-in lasts, however active",
    ),
    Setting(
        "CONSOLE_SESSION_IDLE_MINUTES",
        "console_session_idle_minutes",
        int,
        30,
        minimum=1,
        unit="min",
        help="a console session unused this long ends (sign-out ends it at once)",
    ),
    Setting(
        "METRICS_TOKEN",
        "metrics_token",
        file_variable="METRICS_TOKEN_FILE",
        help="the scrape credential of `/metrics`, 32+ characters (unset: the operator token)",
    ),
    Setting(
        "API_BEHIND_TLS",
        "api_behind_tls",
        default="0",
        choices=("0", "1"),
        help="`1`: the API is reached over HTTPS only (a TLS proxy in front): console cookies "
        "are `Secure` and every answer carries HSTS",
    ),
    Setting(
        "FLOWER_URL",
        "flower_url",
        normalise=link_url,
        rule="an http(s) URL without credentials",
        help="where operators open Flower; the console links each attempt to its task there",
    ),
    Setting(
        "LOG_LEVEL",
        "log_level",
        default="INFO",
        normalise=str.upper,
        choices=("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"),
        help="of every process's log; any case",
    ),
    # Read by `python -m worker flower` and by Flower itself, not by Settings.
    Setting(
        "FLOWER_BASIC_AUTH",
        None,
        rule="`user:password`",
        help="`python -m worker flower` refuses to start without it",
    ),
    Setting(
        "FLOWER_BASIC_AUTH_FILE",
        None,
        rule="a file holding `user:password`",
        help="instead of `FLOWER_BASIC_AUTH` (not both)",
    ),
    Setting(
        "FLOWER_UNAUTHENTICATED_DEV",
        None,
        rule="`1`",
        help="allows Flower without auth (development only)",
    ),
)
