"""Agent settings: built-in defaults < TOML file < ``PUE_AGENT_*`` environment < secrets directory.

Collector and sink entries stay loosely typed here (``kind`` plus a table of
options): each kind validates its own options with its own model when the
pipeline builds it, so this module does not import every protocol library.
Secrets needed by collectors and sinks are referenced by *name* and read with
:func:`read_secret` from the secrets directory (systemd's
``$CREDENTIALS_DIRECTORY`` from ``LoadCredential=``).
"""

from __future__ import annotations

import contextlib
import os
import re
import tomllib
from pathlib import Path
from typing import Any, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, model_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

__all__ = [
    "AGGREGATOR_KINDS",
    "CONFIG_ENV",
    "DEFAULT_CONFIG_PATH",
    "DEFAULT_POLICIES_DIR",
    "AgentSettings",
    "ApiSettings",
    "CollectorEntry",
    "ConfigError",
    "JournalSettings",
    "SinkEntry",
    "collector_name_problems",
    "load_settings",
    "read_config_text",
    "read_secret",
    "secrets_dirs",
    "validation_problems",
]

DEFAULT_CONFIG_PATH = Path("/etc/pue-agent/agent.toml")
#: Names the config file used when a command gets no ``--config`` (empty: none at all).
CONFIG_ENV = "PUE_AGENT_CONFIG"
#: Where operators drop their own policy packs; a pack here with a built-in's id replaces it.
DEFAULT_POLICIES_DIR = Path("/etc/pue-agent/policies.d")
#: Sink kinds of the aggregator: its name, and the name it had before it left the sinks.
AGGREGATOR_KINDS = ("aggregator", "local_store")


class ConfigError(ValueError):
    """A configuration file or value is wrong; the message names the file and field."""


class JournalSettings(BaseModel):
    """Journal placement and budget."""

    model_config = ConfigDict(extra="forbid")

    budget_mb: float = Field(2048.0, gt=0, description="Disk budget for journal payloads, MiB.")
    max_batch_rows: int = Field(
        200_000, gt=0, description="Largest group commit, in readings (bounds commit latency)."
    )
    queue_batches: int = Field(
        256, gt=0, description="Bounded ingest queue between collectors and the journal."
    )


class _KindEntry(BaseModel):
    """A ``[[collectors]]`` or ``[[sinks]]`` table: a kind and its options (validated by it)."""

    model_config = ConfigDict(extra="allow")

    kind: str
    name: str | None = None
    enabled: bool = True

    def options(self) -> dict[str, Any]:
        """The kind-specific options (everything but ``kind``, ``name`` and ``enabled``)."""
        return dict(self.model_extra or {})


class CollectorEntry(_KindEntry):
    """One ``[[collectors]]`` table."""


class SinkEntry(_KindEntry):
    """One ``[[sinks]]`` table."""


class ApiSettings(BaseModel):
    """The ``[api]`` table.

    Tokens are never written in the config file: ``ops_tokens`` and
    ``auditor_tokens`` list *names* of secrets (files in the secrets directory,
    systemd ``LoadCredential=``). Several names per role allow rotation without
    downtime: add the new token, reload (SIGHUP), retire the old one.
    """

    model_config = ConfigDict(extra="forbid")

    enabled: bool = Field(False, description="Serve the HTTP API.")
    listen: str = Field("127.0.0.1", description="Address to bind (loopback by default).")
    port: int = Field(9847, ge=1, le=65535, description="TCP port.")
    ops_tokens: list[str] = Field(
        default_factory=lambda: ["api_token_ops"],
        description="Secret names of bearer tokens with the ops role (everything, read-only).",
    )
    auditor_tokens: list[str] = Field(
        default_factory=lambda: ["api_token_auditor"],
        description="Secret names of bearer tokens with the auditor role (KPIs and reports).",
    )
    tls_cert_file: Path | None = Field(
        None, description="PEM certificate chain; with tls_key_secret, serve HTTPS."
    )
    tls_key_secret: str | None = Field(
        None, description="Secret name of the PEM private key for tls_cert_file."
    )
    max_connections: int = Field(
        256,
        ge=1,
        description="Open API connections at most; beyond it the oldest idle one is closed "
        "(also capped so that 512 file descriptors stay free for the agent's own writes).",
    )
    header_timeout_s: float = Field(
        10.0, gt=0, description="A connection without a complete request head by then is closed."
    )
    idle_timeout_s: float = Field(
        30.0, gt=0, description="An idle keep-alive connection is closed after this long."
    )
    metrics_port: int | None = Field(
        None,
        ge=1,
        le=65535,
        description="Also serve GET /metrics alone, without a token, on this port (plain HTTP; "
        "for Prometheus). Off by default; what it reveals: docs/api.md.",
    )
    metrics_listen: str = Field(
        "127.0.0.1", description="Address of the token-less metrics listener."
    )

    @model_validator(mode="after")
    def _tls_pair(self) -> ApiSettings:
        if (self.tls_cert_file is None) != (self.tls_key_secret is None):
            raise ValueError("tls_cert_file and tls_key_secret go together")
        return self


_Options = TypeVar("_Options", bound=BaseModel)


class AgentSettings(BaseSettings):
    """Everything the agent is told at start-up."""

    model_config = SettingsConfigDict(
        env_prefix="PUE_AGENT_",
        env_nested_delimiter="__",
        extra="forbid",
    )

    state_dir: Path = Field(
        Path("/var/lib/pue-agent"), description="Journal, stores and keys live here."
    )
    site_file: Path | None = Field(
        None, description="Site model file; relative paths are relative to the config file."
    )
    site: dict[str, Any] | None = Field(None, description="Inline [site] table.")
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    # "journald": JSON lines with the <N> syslog priority; "auto" picks it under systemd.
    log_format: Literal["auto", "json", "console", "journald"] = "auto"
    secrets_dir: Path | None = Field(
        None, description="Where named secrets are read; defaults to $CREDENTIALS_DIRECTORY."
    )
    journal: JournalSettings = Field(default_factory=JournalSettings)
    collectors: list[CollectorEntry] = Field(default_factory=list)
    sinks: list[SinkEntry] = Field(default_factory=list)
    api: ApiSettings = Field(default_factory=ApiSettings, description="HTTP API (agent.api).")
    policies_dir: Path | None = Field(
        None,
        description="Operator policy packs (*.toml) read by the live findings, `rules` and "
        "`report` (default /etc/pue-agent/policies.d; env PUE_AGENT_POLICIES_DIR).",
    )
    ack_file: Path | None = Field(
        None, description="Test hook: append 'seq hash rows' after each commit."
    )
    #: A top-level secret example: the signing key passphrase, if any.
    signing_key_passphrase: SecretStr | None = None
    config_path: Path | None = Field(None, exclude=True)

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        """Order the layers: init > secrets dir > environment > TOML file > defaults."""
        del dotenv_settings, file_secret_settings  # replaced by CredentialsSource
        toml_path = _TOML_PATH.get("path")
        credentials = os.environ.get("CREDENTIALS_DIRECTORY")
        layers: list[PydanticBaseSettingsSource] = [
            init_settings,
            CredentialsSource(settings_cls, Path(credentials) if credentials else None),
        ]
        layers.append(env_settings)
        if toml_path is not None:
            layers.append(TomlConfigSettingsSource(settings_cls, toml_file=toml_path))
        return tuple(layers)

    def resolve(self, path: Path) -> Path:
        """Resolve a path from the config file relative to the config file's folder."""
        if path.is_absolute() or self.config_path is None:
            return path
        return (self.config_path.parent / path).resolve()

    def resolve_tls_files(self, options: _Options) -> _Options:
        """``options`` with its TLS files resolved like every path of the config.

        The MQTT and NATS connections share the fields ``ca_file``, ``client_cert_file``
        and ``client_key_file``.
        """
        updates = {
            key: self.resolve(getattr(options, key))
            for key in ("ca_file", "client_cert_file", "client_key_file")
            if getattr(options, key, None) is not None
        }
        return options.model_copy(update=updates)

    def policies_path(self) -> Path:
        """Where the operator's policy packs are read from (every reader uses this one)."""
        return self.resolve(self.policies_dir) if self.policies_dir else DEFAULT_POLICIES_DIR

    def aggregator_entry(self) -> SinkEntry | None:
        """The first enabled aggregator entry of ``[[sinks]]``, if one is configured."""
        for entry in self.sinks:
            if entry.kind in AGGREGATOR_KINDS and entry.enabled:
                return entry
        return None

    def store_path(self) -> Path:
        """The interval store: the aggregator's ``store_dir``, else ``<state_dir>/store``.

        Every reader of the store (``kpi``, ``rules``, ``report``, the API, the sinks'
        feeds, the demo) and the aggregator itself locate it here, so a ``store_dir``
        outside the state directory is honoured everywhere.
        """
        entry = self.aggregator_entry()
        store_dir = entry.options().get("store_dir") if entry is not None else None
        return self.resolve(Path(store_dir)) if store_dir else self.state_dir / "store"

    def green_ledger_path(self) -> Path:
        """The green certificates/contracts ledger that ``pue-agent green`` keeps."""
        return self.state_dir / "green" / "ledger.json"

    @property
    def journal_path(self) -> Path:
        """The journal database inside the state directory."""
        return self.state_dir / "journal" / "journal.sqlite"


class CredentialsSource(PydanticBaseSettingsSource):
    """Top-level settings from files named after the field (systemd ``LoadCredential=``).

    pydantic-settings' own secrets source expects the ``PUE_AGENT_`` prefix in file
    names; systemd credentials are named by the operator, so plain field names are used.
    """

    def __init__(self, settings_cls: type[BaseSettings], folder: Path | None) -> None:
        """Read credentials for ``settings_cls`` from ``folder`` (nothing when ``None``)."""
        super().__init__(settings_cls)
        self.folder = folder

    def get_field_value(self, field: Any, field_name: str) -> tuple[Any, str, bool]:
        """Return the file content for ``field_name`` (pydantic-settings hook)."""
        if self.folder is None:
            return None, field_name, False
        candidate = self.folder / field_name
        if candidate.is_file():
            return candidate.read_text(encoding="utf-8").rstrip("\r\n"), field_name, False
        return None, field_name, False

    def __call__(self) -> dict[str, Any]:
        """All settings found in the folder."""
        found: dict[str, Any] = {}
        for name, field in self.settings_cls.model_fields.items():
            value, key, _ = self.get_field_value(field, name)
            if value is not None:
                found[key] = value
        return found


# pydantic-settings builds sources from class-level hooks; this holds the TOML path of the
# load in progress (loads are rare and single-threaded: start-up, SIGHUP, CLI).
_TOML_PATH: dict[str, Path | None] = {"path": None}


def read_config_text(path: Path) -> str:
    """A config file's text; not UTF-8 or unreadable is a :class:`ConfigError` with the place.

    Args:
        path: The TOML file.

    Raises:
        ConfigError: naming the file, and for bad UTF-8 the line and byte offset (a raw
            ``UnicodeDecodeError`` traceback before issue 22).
    """
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror or exc}") from None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        column = exc.start - (data.rfind(b"\n", 0, exc.start) + 1) + 1
        raise ConfigError(
            f"{path}: line {line}, column {column} (byte offset {exc.start}): not UTF-8 "
            f"(byte 0x{data[exc.start]:02x}); save the file as UTF-8"
        ) from None


def secrets_dirs(settings: AgentSettings | None = None) -> list[Path]:
    """Directories searched for named secrets, most specific first."""
    dirs: list[Path] = []
    credentials = os.environ.get("CREDENTIALS_DIRECTORY")
    if credentials:
        dirs.append(Path(credentials))
    if settings is not None and settings.secrets_dir is not None:
        dirs.append(settings.secrets_dir)
    return dirs


def read_secret(name: str, settings: AgentSettings | None = None) -> SecretStr:
    """Read the secret ``name`` from the secrets directory.

    Raises:
        ConfigError: naming the secret (never its value) when no directory holds it.
    """
    for folder in secrets_dirs(settings):
        candidate = folder / name
        if candidate.is_file():
            return SecretStr(candidate.read_text(encoding="utf-8").rstrip("\r\n"))
    searched = ", ".join(str(d) for d in secrets_dirs(settings)) or "no secrets directory set"
    raise ConfigError(f"secret {name!r} not found (searched: {searched})")


def collector_name_problems(settings: AgentSettings) -> list[str]:
    """Enabled collectors that share a name, one problem per name, naming every entry.

    ``run`` and ``check`` both ask this, so ``check`` refuses what ``run`` would. An entry
    without ``name`` is called ``<kind>-<index>`` (as the pipeline names it).

    Args:
        settings: Loaded settings (``config_path`` gives the file for line numbers).

    Returns:
        Messages like ``collectors[0] (line 4) and collectors[2] (line 12) share the name
        'sim-a'``; empty when every name is unique.
    """
    seen: dict[str, list[int]] = {}
    for i, entry in enumerate(settings.collectors):
        if entry.enabled:
            seen.setdefault(entry.name or f"{entry.kind}-{i}", []).append(i)
    text = ""
    if settings.config_path is not None:
        with contextlib.suppress(ConfigError):
            text = read_config_text(settings.config_path)
    starts = [m.start() for m in re.finditer(r"^[ \t]*\[\[[ \t]*collectors[ \t]*\]\]", text, re.M)]
    problems = []
    for name, indexes in seen.items():
        if len(indexes) < 2:
            continue
        where = []
        for i in indexes:
            # Entries in file order are the [[collectors]] tables in file order.
            line = f" (line {text.count(chr(10), 0, starts[i]) + 1})" if i < len(starts) else ""
            where.append(f"collectors[{i}]{line}")
        source = f"{settings.config_path}: " if settings.config_path else ""
        problems.append(
            f"{source}{' and '.join(where)} share the name {name!r}: collector names must "
            "be unique (they label readings, metrics and reloads)"
        )
    return problems


def validation_problems(error: ValidationError, field_prefix: str = "", sep: str = "; ") -> str:
    """Every failing field of a pydantic error as ``<prefix><field>: <message>``, joined.

    The one way configuration, options, profiles and mappings name what is wrong: the
    dotted field path (``(top level)`` for the model itself) and pydantic's message
    without its ``Value error, `` prefix.
    """
    return sep.join(
        f"{field_prefix}{'.'.join(str(part) for part in item['loc']) or '(top level)'}: "
        f"{str(item['msg']).removeprefix('Value error, ')}"
        for item in error.errors()
    )


def _format_validation(error: ValidationError, source: str) -> str:
    return validation_problems(error, f"{source}: ", "\n")


def _default_config_path() -> Path | None:
    """The config file used when none is given: ``$PUE_AGENT_CONFIG`` or the installed one."""
    # The variable lets a second agent, or a test run, on a host with the package installed
    # ignore /etc/pue-agent without passing --config to every command.
    named = os.environ.get(CONFIG_ENV)
    if named is not None:
        return Path(named) if named else None
    return DEFAULT_CONFIG_PATH if DEFAULT_CONFIG_PATH.is_file() else None


def load_settings(config: Path | None = None, **overrides: Any) -> AgentSettings:
    """Load settings from the layers, with ``config`` as the TOML file.

    Args:
        config: The TOML file; ``None`` uses ``$PUE_AGENT_CONFIG`` if that is set (empty:
            no file), else ``/etc/pue-agent/agent.toml`` if it exists.
        **overrides: Highest-priority values (used by the CLI and tests).

    Raises:
        ConfigError: naming the file and field of every problem.
    """
    path = config
    if path is None:
        path = _default_config_path()
    if path is not None:
        if not path.is_file():
            raise ConfigError(f"{path}: config file not found")
        try:
            tomllib.loads(read_config_text(path))
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{path}: {exc}") from exc
    _TOML_PATH["path"] = path
    try:
        settings = AgentSettings(
            config_path=path.resolve() if path else None,
            **overrides,
        )
    except ValidationError as exc:
        raise ConfigError(_format_validation(exc, str(path or "settings"))) from exc
    finally:
        _TOML_PATH["path"] = None
    # Relative paths in the file mean "next to the file", as an operator expects.
    updates: dict[str, Any] = {"state_dir": settings.resolve(settings.state_dir)}
    if settings.site_file is not None:
        updates["site_file"] = settings.resolve(settings.site_file)
    if settings.ack_file is not None:
        updates["ack_file"] = settings.resolve(settings.ack_file)
    return settings.model_copy(update=updates)
