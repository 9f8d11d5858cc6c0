"""Where the InfluxDB output writes: URL, API version, destination and credentials."""

from __future__ import annotations

import urllib.parse
from dataclasses import dataclass

from p1logger.errors import ConfigError
from p1logger.outputs.influx.transports import TRANSPORTS, HttpTransport


@dataclass(frozen=True, repr=False)
class InfluxTarget:
    """Where to write. For v1, `bucket` is the database, or `database/retention_policy`."""

    url: str
    api: str
    org: str
    bucket: str
    token: str | None = None
    username: str | None = None
    password: str | None = None
    timeout_s: float = 10.0
    gzip: bool = True

    def __post_init__(self) -> None:
        if self.token is not None:
            # A token read from a file into a variable (a Kubernetes secret) often ends in a newline. It goes in
            # a header, where http.client refuses a line break with an error that quotes the header, token and all.
            token = self.token.strip()
            if any(ord(c) < 32 or ord(c) == 127 for c in token):
                raise ConfigError("the InfluxDB token contains a line break or another control character: "
                                  "fix INFLUX_TOKEN or INFLUX_TOKEN_FILE")
            object.__setattr__(self, "token", token or None)
        if self.api not in TRANSPORTS:
            raise ConfigError(f"InfluxDB API must be {' or '.join(repr(a) for a in TRANSPORTS)}, not {self.api!r}")
        parts = urllib.parse.urlsplit(self.url)
        if parts.username is not None or parts.password is not None:
            # The URL is echoed in messages, so it must not carry credentials.
            raise ConfigError("the InfluxDB URL must not contain a user or password; set them separately")
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ConfigError(f"InfluxDB URL {self.url!r} must look like http://host:8086")
        problem = self.transport_class.validate(self)
        if problem:
            raise ConfigError(problem)
        if (self.username is None) != (self.password is None):
            raise ConfigError("set both the InfluxDB username and password, or neither")
        if not self.timeout_s > 0:
            raise ConfigError(f"InfluxDB timeout must be positive, not {self.timeout_s!r} s")

    def __repr__(self) -> str:
        def secret(value: str | None) -> str:
            return "None" if value is None else "'***'"

        return (
            f"InfluxTarget(url={self.url!r}, api={self.api!r}, org={self.org!r}, bucket={self.bucket!r}, "
            f"token={secret(self.token)}, username={self.username!r}, password={secret(self.password)}, "
            f"timeout_s={self.timeout_s!r}, gzip={self.gzip!r})"
        )

    __str__ = __repr__

    @property
    def transport_class(self) -> type[HttpTransport]:
        return TRANSPORTS[self.api]

    def transport(self) -> HttpTransport:
        return self.transport_class(self)

    @property
    def database(self) -> str:
        return self.bucket.split("/", 1)[0]

    @property
    def retention_policy(self) -> str | None:
        _, _, rp = self.bucket.partition("/")
        return rp or None

    def describe_destination(self) -> str:
        return self.transport_class.describe_destination(self)
