# Stage 3 of 5: execution. Credentials, read in one place for every engine.
#
# A database's user and password come from a my.cnf-style creds file
# ([client] user/password/host/port). May touch: the creds file (read only).
# Errors name the file and, for a malformed one, the line, never its text:
# that line may hold the password.

from __future__ import annotations

from pathlib import Path

from .datatypes import EngineError


def read_creds_file(path: Path) -> dict[str, str]:
    """user/password (and host/port if given) from a my.cnf [client] section."""
    import configparser  # here, not at start-up: a run of scripts reads no creds file
    parser = configparser.ConfigParser(allow_no_value=True, strict=False, interpolation=None,
                                       comment_prefixes=("#", ";", "!"))
    try:
        with open(path, encoding="utf-8") as handle:
            parser.read_file(handle)
    except OSError as exc:
        raise EngineError(f"cannot read creds file {path}: {exc.strerror or type(exc).__name__}") from None
    except UnicodeDecodeError:
        raise EngineError(f"cannot read creds file {path}: it is not UTF-8 text") from None
    except Exception as exc:  # configparser.Error; AttributeError for an indented line after a bare key
        # Never configparser's own text: it quotes the offending line, which
        # may be the password's.
        line = getattr(exc, "lineno", None) or next(iter(getattr(exc, "errors", ())), (None,))[0]
        at = f" (line {line})" if line else ""
        raise EngineError(f"creds file {path} is not a my.cnf file{at}: "
                          "expected [client] and key = value lines") from None
    if not parser.has_section("client"):
        raise EngineError(f"creds file {path} has no [client] section")
    creds: dict[str, str] = {}
    for key in ("user", "password", "host", "port"):
        value = parser.get("client", key, fallback=None)
        if value is not None:
            value = value.strip()
            if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
                value = value[1:-1]
            creds[key] = value
    return creds
