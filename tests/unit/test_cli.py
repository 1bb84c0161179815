"""The ``messagebus`` command (DESIGN.md §6, §7): replay a log into an application's bus,
and list, show, retry and purge its dead letters.

The applications that ``--app`` names are the factories of this module.
"""

from __future__ import annotations

import io
import json
import os
import re
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import attrs
import pytest
import structlog

from messagebus import AsyncMessageBus, Command, Context, Event, MessageBus, Metadata, Registry
from messagebus.cli import main
from messagebus.dead_letters import InMemoryDeadLetterStore
from messagebus.observe import InMemoryDeadLetters

ROOT = Path(__file__).resolve().parents[2]
HERE = __name__  # what --app names: tests.unit.test_cli


@attrs.frozen
class Register(Command[None]):
    user: str


@attrs.frozen
class Registered(Event):
    user: str


@attrs.frozen
class Remind(Command[None]):
    user: str


class MailDown(Exception):
    pass


#: What the handlers of the applications below did, and what they should fail at.
HANDLED: list[tuple[str, Any, Metadata]] = []
BROKEN: set[str] = set()
STORE = InMemoryDeadLetterStore()


@pytest.fixture(autouse=True)
def fresh_application() -> Iterator[None]:
    global STORE
    HANDLED.clear()
    BROKEN.clear()
    STORE = InMemoryDeadLetterStore()
    yield
    HANDLED.clear()
    BROKEN.clear()


def quiet() -> Any:
    return structlog.wrap_logger(structlog.ReturnLogger(), processors=[])


def handled(handler: str) -> list[Any]:
    return [message for name, message, _ in HANDLED if name == handler]


def application() -> Registry:
    registry = Registry()

    @registry.register(uow=False)
    def register(command: Register, context: Context, metadata: Metadata) -> None:
        if "register" in BROKEN or command.user == "mallory":
            raise ValueError(f"refused: {command.user}")
        HANDLED.append(("register", command, metadata))
        context.emit(Registered(command.user))

    @registry.register(uow=False)
    def welcome(event: Registered, metadata: Metadata) -> None:
        if "welcome" in BROKEN:
            raise MailDown("the mail server is down")
        HANDLED.append(("welcome", event, metadata))

    @registry.register(uow=False)
    def remind(command: Remind, metadata: Metadata) -> None:
        HANDLED.append(("remind", command, metadata))

    return registry


def make_bus() -> MessageBus:
    return MessageBus(application(), logger=quiet(), dead_letters=STORE)


def make_async_bus() -> AsyncMessageBus:
    registry = Registry()

    @registry.register(uow=False)
    async def register(command: Register, context: Context, metadata: Metadata) -> None:
        HANDLED.append(("register", command, metadata))
        context.emit(Registered(command.user))

    @registry.register(uow=False)
    async def welcome(event: Registered, metadata: Metadata) -> None:
        if "welcome" in BROKEN:
            raise MailDown("the mail server is down")
        HANDLED.append(("welcome", event, metadata))

    return AsyncMessageBus(registry, logger=quiet(), dead_letters=STORE)


@attrs.frozen
class Service:
    bus: MessageBus


def make_service() -> Service:
    return Service(make_bus())


BUS = MessageBus(application(), logger=quiet())


def make_nothing() -> int:
    return 42


def make_trouble() -> MessageBus:
    raise RuntimeError("no database configured")


def make_bus_without_letters() -> MessageBus:
    return MessageBus(application(), logger=quiet())


def make_bus_with_a_plain_store() -> MessageBus:
    return MessageBus(application(), logger=quiet(), dead_letters=InMemoryDeadLetters())


def make_interrupted() -> MessageBus:
    raise KeyboardInterrupt


class BusWithItsStore(MessageBus):
    """A bus that shows its dead-letter store as a public attribute."""

    @property
    def dead_letters(self) -> InMemoryDeadLetterStore:
        return OTHER_STORE


OTHER_STORE = InMemoryDeadLetterStore()


def make_bus_showing_its_store() -> MessageBus:
    return BusWithItsStore(application(), logger=quiet())


def app(factory: str = "make_bus") -> list[str]:
    return ["--app", f"{HERE}:{factory}"]


# -- logs ---------------------------------------------------------------------------


def record(name: str, payload: object, **fields: Any) -> str:
    message_id = str(uuid.uuid4())
    data = {
        "event": "message_handled",
        "message_name": name,
        "message_id": message_id,
        "correlation_id": message_id,
        "causation_id": None,
        "created_at": "2024-05-01T12:00:00+00:00",
        "handler": "app.handler",
        "attempt": 1,
        "outcome": "succeeded",
        "payload": payload,
    }
    data.update(fields)
    return json.dumps(data)


def write(path: Path, lines: list[str]) -> str:
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return str(path)


@pytest.fixture
def log(tmp_path: Path) -> str:
    """Two users registered (each with its welcome), a reminder, and a refusal."""
    bob = record("Register", {"user": "bob"}, created_at="2024-05-01T09:00:00+00:00")
    bob_id = json.loads(bob)["message_id"]
    lines = [
        bob,
        record("Registered", {"user": "bob"}, causation_id=bob_id, correlation_id=bob_id),
        record("Register", {"user": "eve"}, created_at="2024-05-01T10:00:00+00:00"),
        record("Remind", {"user": "bob"}, created_at="2024-05-01T11:00:00+00:00"),
        record("Register", {"user": "mallory"}, outcome="failed"),
    ]
    return write(tmp_path / "app.log", lines)


def counts(table: str) -> dict[str, str]:
    """The rows of the summary table: label -> count."""
    rows = {}
    for line in table.splitlines():
        cells = [cell.strip() for cell in line.strip().strip("│").split("│")]
        if len(cells) == 2 and cells[1].replace(",", "").isdigit():
            rows[cells[0]] = cells[1]
    return rows


# -- replay -------------------------------------------------------------------------


def test_replay_handles_the_logged_messages_again_and_sums_up(
    log: str, capsys: pytest.CaptureFixture[str]
) -> None:
    status = main(["replay", log, *app()])

    out, err = capsys.readouterr()
    assert 0 == status
    assert ["bob", "eve"] == [m.user for m in handled("register")]
    assert ["bob", "eve"] == [m.user for m in handled("welcome")]  # raised again
    assert [Remind("bob")] == handled("remind")
    assert "line 5: Register failed: ValueError: refused: mallory" in err
    assert {
        "read": "5",
        "replayed": "3",
        "skipped": "1",
        "raised events": "1",
        "failed": "1",
        "bad lines": "0",
        "handling failed": "1",
    } == counts(out)


def test_replayed_messages_keep_their_logged_ids(log: str) -> None:
    main(["replay", log, *app()])

    first = json.loads(Path(log).read_text().splitlines()[0])
    (_, _, metadata) = HANDLED[0]
    assert first["message_id"] == str(metadata.message_id)


def test_ten_thousand_lines_with_one_percent_garbage(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    lines = [record("Remind", {"user": f"u{n}"}) for n in range(10_000)]
    garbage = list(range(99, 10_000, 100))  # 100 lines: 1%
    for index in garbage:
        lines[index] = ["{not json", "", "[]", "garbage"][index % 4] or "\x00"
    path = write(tmp_path / "big.log", lines)

    status = main(["replay", path, *app()])

    out, err = capsys.readouterr()
    assert 0 == status
    assert 9_900 == len(handled("remind"))  # every good line replayed
    reported = [int(line.split()[1].rstrip(":")) for line in err.splitlines()]
    assert [n + 1 for n in garbage] == reported  # every bad line, by its number
    assert {"read": "10,000", "replayed": "9,900", "bad lines": "100"}.items() <= counts(
        out
    ).items()

    HANDLED.clear()
    status = main(["replay", path, "--strict", *app()])

    out, err = capsys.readouterr()
    assert 1 == status
    assert 99 == len(handled("remind"))  # stopped at the first bad line
    assert "line 100: " in err
    assert "stopped at line 100 (--strict)" in err


def test_strict_without_problems_exits_zero(tmp_path: Path) -> None:
    path = write(tmp_path / "ok.log", [record("Remind", {"user": "bob"})])

    assert 0 == main(["replay", path, "--strict", *app()])


def test_types_are_chosen_by_repeating_the_option_or_with_commas(log: str) -> None:
    main(["replay", log, "--type", "Remind", *app()])
    assert ([], 1) == (handled("register"), len(handled("remind")))

    HANDLED.clear()
    main(["replay", log, "--type", "Remind,Register", *app()])
    assert (2, 1) == (len(handled("register")), len(handled("remind")))

    HANDLED.clear()
    main(["replay", log, "--type", "Remind", "--type", "Register", *app()])
    assert (2, 1) == (len(handled("register")), len(handled("remind")))


def test_an_unknown_type_stops_before_anything_is_replayed(
    log: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert 2 == main(["replay", log, "--type", "Regster", *app()])
    assert "Regster" in capsys.readouterr().err
    assert [] == HANDLED


def test_a_time_range_in_iso_8601_utc_unless_an_offset_is_given(log: str) -> None:
    main(
        ["replay", log, "--since", "2024-05-01T09:30", "--until", "2024-05-01T12:30+02:00", *app()]
    )

    assert [Register("eve")] == handled("register")
    assert [] == handled("remind")  # 11:00 UTC is after 10:30 UTC

    HANDLED.clear()
    main(["replay", log, "--since", "2024-05-01T10:30:00Z", *app()])
    assert [Remind("bob")] == handled("remind")


def test_a_time_that_is_not_iso_8601_is_a_usage_error(
    log: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert 2 == main(["replay", log, "--since", "yesterday", *app()])
    assert "not an ISO 8601 time" in capsys.readouterr().err


def test_failed_only_and_include_events(log: str) -> None:
    main(["replay", log, "--failed-only", *app()])
    assert [] == handled("register") == handled("remind")  # mallory is refused again

    HANDLED.clear()
    main(["replay", log, "--include-events", *app()])
    assert 3 == len(handled("welcome"))  # bob's twice: raised again, and replayed


def test_a_dry_run_handles_nothing(log: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert 0 == main(["replay", log, "--dry-run", *app()])

    out = capsys.readouterr().out
    assert [] == HANDLED
    assert "dry run" in out
    assert "to replay" in out


def test_a_log_is_read_from_stdin_with_a_dash(
    log: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(Path(log).read_bytes())))

    assert 0 == main(["replay", "-", *app()])
    assert 2 == len(handled("register"))


class Stderr(io.StringIO):
    """A captured stderr that is, or is not, a terminal (as an interactive shell's is)."""

    def __init__(self, *, terminal: bool) -> None:
        super().__init__()
        self.terminal = terminal

    def isatty(self) -> bool:
        return self.terminal


def stderr(monkeypatch: pytest.MonkeyPatch, *, terminal: bool) -> Stderr:
    """Put a stderr in place; rich decides from its isatty() alone, not the environment."""
    for name in ("FORCE_COLOR", "NO_COLOR", "TTY_COMPATIBLE", "TTY_INTERACTIVE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("TERM", "xterm-256color")
    stream = Stderr(terminal=terminal)
    monkeypatch.setattr(sys, "stderr", stream)
    return stream


def without_control_codes(text: str) -> str:
    return re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", text)


def test_replay_shows_a_progress_bar_on_a_terminal(
    log: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    err = stderr(monkeypatch, terminal=True)

    assert 0 == main(["replay", log, *app()])

    shown = without_control_codes(err.getvalue())
    # The last frame, drawn when the whole log is read: the task, a full bar, 100%.
    assert re.search(r"replaying ━{10,} 100%", shown), shown
    assert "line 5: Register failed: ValueError: refused: mallory\n" in shown
    assert "replayed" in capsys.readouterr().out  # the summary, as without a bar


@pytest.mark.parametrize(
    ("terminal", "options"),
    [(True, ["--no-progress"]), (False, [])],
    ids=["no-progress-on-a-terminal", "not-a-terminal"],
)
def test_replay_shows_no_progress_bar_with_no_progress_or_off_a_terminal(
    log: str, monkeypatch: pytest.MonkeyPatch, terminal: bool, options: list[str]
) -> None:
    err = stderr(monkeypatch, terminal=terminal)

    assert 0 == main(["replay", log, *options, *app()])

    assert "line 5: Register failed: ValueError: refused: mallory\n" == err.getvalue()


def test_a_missing_log_cannot_start(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert 2 == main(["replay", str(tmp_path / "nope.log"), *app()])
    assert "no log file" in capsys.readouterr().err


def test_problems_are_printed_as_they_are_not_as_markup(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    odd = "[bold]not json[/bold] [redacted]"
    path = write(tmp_path / "odd.log", [record("Remind", {"user": "bob"}), odd])

    main(["replay", path, *app()])

    assert "line 2: not JSON" in capsys.readouterr().err
    capsys.readouterr()
    main(["replay", path, *app()])
    assert "[bold]not json[/bold] [redacted]" in capsys.readouterr().err


def test_a_replay_into_an_async_bus(log: str) -> None:
    path = Path(log)
    path.write_text("\n".join(path.read_text().splitlines()[:3]) + "\n")

    assert 0 == main(["replay", log, *app("make_async_bus")])
    assert ["bob", "eve"] == [m.user for m in handled("welcome")]


# -- the application ----------------------------------------------------------------


@pytest.mark.parametrize("factory", ["BUS", "make_service"])
def test_the_app_may_be_a_bus_or_have_one(factory: str, log: str) -> None:
    assert 0 == main(["replay", log, "--dry-run", *app(factory)])


@pytest.mark.parametrize(
    ("spec", "says"),
    [
        ("tests.unit.test_cli", "module:factory"),
        ("tests.unit.no_such_module:make_bus", "cannot import"),
        (f"{HERE}:make_buss", "has no 'make_buss'"),
        (f"{HERE}:make_nothing", "gave int, not a MessageBus"),
        (f"{HERE}:make_trouble", "RuntimeError: no database configured"),
    ],
)
def test_an_app_that_cannot_be_loaded_cannot_start(
    spec: str, says: str, log: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert 2 == main(["replay", log, "--app", spec])
    assert says in capsys.readouterr().err


def test_the_app_comes_from_the_environment_when_not_given(
    log: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("MESSAGEBUS_APP", raising=False)
    assert 2 == main(["replay", log])
    assert "--app" in capsys.readouterr().err

    monkeypatch.setenv("MESSAGEBUS_APP", f"{HERE}:make_bus")
    assert 0 == main(["replay", log])
    assert 2 == len(handled("register"))


def test_the_app_is_found_in_the_current_directory(
    log: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    name = f"cli_app_{uuid.uuid4().hex[:8]}"
    (tmp_path / f"{name}.py").write_text(f"from {HERE} import make_bus as factory\n")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", [p for p in sys.path if p not in ("", str(tmp_path))])

    assert 0 == main(["replay", log, "--app", f"{name}:factory"])
    assert 2 == len(handled("register"))
    del sys.modules[name]


def test_an_interrupted_command_exits_130(log: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert 130 == main(["replay", log, *app("make_interrupted")])
    assert "interrupted" in capsys.readouterr().err


def test_help_and_usage_errors(capsys: pytest.CaptureFixture[str]) -> None:
    assert 0 == main(["--help"])
    assert "replay" in capsys.readouterr().out
    assert 2 == main([])
    assert 2 == main(["replay"])
    assert 2 == main(["dead-letters"])


def test_without_rich_the_command_says_what_to_install(
    log: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setitem(sys.modules, "rich", None)  # import rich fails

    assert 2 == main(["replay", log, *app()])
    assert "pip install 'service-messagebus[cli]'" in capsys.readouterr().err


def test_the_installed_command_exits_with_the_status_main_returns(log: str) -> None:
    def run(*args: str) -> subprocess.CompletedProcess[str]:
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        return subprocess.run(
            [sys.executable, "-m", "messagebus.cli", "replay", log, *app(), *args],
            capture_output=True,
            text=True,
            env=env,
            cwd=ROOT,
            check=False,
            timeout=60,
        )

    assert 0 == run().returncode
    strict = run("--strict")
    assert 1 == strict.returncode
    assert "line 5:" in strict.stderr


def test_the_package_imports_without_rich_and_without_sqlalchemy() -> None:
    # rich is optional (the cli extra): only the command's table and progress bar need
    # it. (structlog itself imports rich when it is installed, so its absence is what
    # can be checked.) SQLAlchemy is needed only by messagebus.sqlalchemy.
    script = (
        "import sys; sys.modules['rich'] = None\n"
        "import messagebus, messagebus.cli, messagebus.replay, messagebus.dead_letters\n"
        "import messagebus.logging\n"
        "print(sorted({m.partition('.')[0] for m in sys.modules} & {'sqlalchemy'}))\n"
        "raise SystemExit(messagebus.cli.main(['dead-letters', 'show', '1', '--app', 'x:y']))"
    )
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=False, timeout=60
    )
    assert "[]" == result.stdout.strip()
    assert "cannot import 'x'" in result.stderr  # it got as far as loading the application
    assert 2 == result.returncode


# -- dead letters -------------------------------------------------------------------


def fail_welcomes(*users: str) -> None:
    BROKEN.add("welcome")
    bus = make_bus()
    for user in users:
        bus.handle(Register(user))
    BROKEN.clear()
    HANDLED.clear()


def test_list_shows_the_pending_letters(capsys: pytest.CaptureFixture[str]) -> None:
    fail_welcomes("bob", "eve")

    assert 0 == main(["dead-letters", "list", *app()])

    out = capsys.readouterr().out
    assert "dead letters (pending): 2" in out
    assert out.count("Registered") == 2
    assert "MailDown: the mail server is down" in out
    assert "welcome" in out


def test_list_as_json_with_filters(capsys: pytest.CaptureFixture[str]) -> None:
    fail_welcomes("bob", "eve")
    main(["dead-letters", "retry", "1", *app()])
    capsys.readouterr()

    main(["dead-letters", "list", "--json", *app()])
    assert [2] == [letter["id"] for letter in json.loads(capsys.readouterr().out)]
    main(["dead-letters", "list", "--json", "--resolved", *app()])
    assert [1] == [letter["id"] for letter in json.loads(capsys.readouterr().out)]
    main(["dead-letters", "list", "--json", "--all", "--limit", "5", *app()])
    everything = json.loads(capsys.readouterr().out)
    assert [1, 2] == [letter["id"] for letter in everything]
    assert ["resolved", "pending"] == [letter["status"] for letter in everything]
    main(["dead-letters", "list", "--json", "--type", "Register", *app()])
    assert [] == json.loads(capsys.readouterr().out)


def test_show_gives_everything_about_one_letter(capsys: pytest.CaptureFixture[str]) -> None:
    fail_welcomes("bob")

    assert 0 == main(["dead-letters", "show", "1", *app()])
    out = capsys.readouterr().out
    assert '"user": "bob"' in out
    assert "message_id" in out
    assert "Traceback (most recent call last)" in out

    assert 0 == main(["dead-letters", "show", "1", "--json", *app()])
    shown = json.loads(capsys.readouterr().out)
    assert ({"user": "bob"}, "pending") == (shown["payload"], shown["status"])
    assert shown["metadata"]["message_id"] == shown["message_id"]


def test_show_gives_the_last_retrys_traceback_too(capsys: pytest.CaptureFixture[str]) -> None:
    fail_welcomes("bob")
    BROKEN.add("welcome")
    main(["dead-letters", "retry", "1", *app()])
    capsys.readouterr()

    main(["dead-letters", "show", "1", *app()])

    out = capsys.readouterr().out
    assert "retries:         1" in out
    assert "last retry's traceback:" in out


def test_the_store_a_bus_shows_is_the_one_used(capsys: pytest.CaptureFixture[str]) -> None:
    fail_welcomes("bob")  # a letter in STORE, copied to the store the bus shows
    OTHER_STORE.purge()
    for stored in STORE.list():
        OTHER_STORE.add(stored.letter)

    assert 0 == main(["dead-letters", "list", "--json", *app("make_bus_showing_its_store")])

    assert [{"user": "bob"}] == [s.letter.payload for s in OTHER_STORE.list()]
    assert 1 == len(json.loads(capsys.readouterr().out))
    OTHER_STORE.purge()


def test_showing_an_unknown_letter_fails(capsys: pytest.CaptureFixture[str]) -> None:
    assert 1 == main(["dead-letters", "show", "7", *app()])
    assert "no dead letter has the id 7" in capsys.readouterr().err


def test_retry_one_by_type_or_all(capsys: pytest.CaptureFixture[str]) -> None:
    fail_welcomes("a", "b", "c")

    assert 0 == main(["dead-letters", "retry", "2", *app()])
    assert "2: resolved" in capsys.readouterr().out
    assert [Registered("b")] == handled("welcome")
    assert 0 == main(["dead-letters", "retry", "--type", "Registered", *app()])
    assert "retried 2: 2 resolved, 0 failed" in capsys.readouterr().out
    assert 0 == main(["dead-letters", "retry", "--all", *app()])
    assert "retried 0" in capsys.readouterr().out
    assert 0 == main(["dead-letters", "retry", "1", *app()])
    assert "1: already resolved" in capsys.readouterr().out


def test_a_retry_that_fails_exits_one(capsys: pytest.CaptureFixture[str]) -> None:
    fail_welcomes("bob")
    BROKEN.add("welcome")

    assert 1 == main(["dead-letters", "retry", "--all", *app()])
    out, err = capsys.readouterr()
    assert "1: failed again: MailDown: the mail server is down" in err
    assert "retried 1: 0 resolved, 1 failed" in out
    assert 1 == main(["dead-letters", "retry", "9", *app()])


def test_retry_wants_one_way_of_choosing(capsys: pytest.CaptureFixture[str]) -> None:
    assert 2 == main(["dead-letters", "retry", *app()])
    assert 2 == main(["dead-letters", "retry", "1", "--all", *app()])
    assert "one of them" in capsys.readouterr().err


def test_purge_deletes_only_what_it_is_told_to(capsys: pytest.CaptureFixture[str]) -> None:
    fail_welcomes("a", "b", "c")
    main(["dead-letters", "retry", "1", *app()])

    assert 2 == main(["dead-letters", "purge", *app()])
    assert 2 == main(["dead-letters", "purge", "--all", "--resolved", *app()])
    capsys.readouterr()
    assert 0 == main(["dead-letters", "purge", "--resolved", *app()])
    assert "purged 1 dead letter\n" in capsys.readouterr().out
    assert 0 == main(["dead-letters", "purge", "2", "--type", "Registered", *app()])
    assert [3] == [s.id for s in STORE.list(resolved=None)]
    assert 0 == main(["dead-letters", "purge", "--all", *app()])
    assert [] == STORE.list(resolved=None)


def test_dead_letters_of_an_async_bus(capsys: pytest.CaptureFixture[str]) -> None:
    BROKEN.add("welcome")
    import asyncio

    asyncio.run(make_async_bus().handle(Register("bob")))
    BROKEN.clear()

    assert 0 == main(["dead-letters", "retry", "1", *app("make_async_bus")])
    assert 0 == main(["dead-letters", "retry", "--type", "Registered", *app("make_async_bus")])
    assert 0 == main(["dead-letters", "retry", "--all", *app("make_async_bus")])
    assert [Registered("bob")] == handled("welcome")


@pytest.mark.parametrize(
    ("factory", "says"),
    [
        ("make_bus_without_letters", "keeps no dead letters"),
        ("make_bus_with_a_plain_store", "cannot list or mark"),
    ],
)
def test_a_bus_without_a_managed_store_cannot_start(
    factory: str, says: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert 2 == main(["dead-letters", "list", *app(factory)])
    assert says in capsys.readouterr().err


def test_list_shows_when_each_letter_failed(capsys: pytest.CaptureFixture[str]) -> None:
    fail_welcomes("bob")

    [stored] = STORE.list(resolved=None)

    main(["dead-letters", "list", *app()])

    assert stored.letter.failed_at.strftime("%Y-%m-%d %H:%M:%S") in capsys.readouterr().out


# -- what is not a log --------------------------------------------------------------


def test_a_file_that_is_not_a_log_is_refused_in_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write(tmp_path / "notes.txt", ["Dear diary,", "", "today the bus ran.", "[]"])

    assert 2 == main(["replay", path, *app()])

    out, err = capsys.readouterr()
    assert "" == out
    assert (
        f"messagebus: {path!r} is not a log of JSON lines: none of its 3 lines is a JSON object\n"
    ) == err
    assert [] == HANDLED


def test_a_binary_file_is_refused_and_never_echoed(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "app.db"
    path.write_bytes(b"SQLite format 3\x00\x10\x00\x01\x01\n\x1b[2J\xff\xfe\x00garbage\n" * 50)

    assert 2 == main(["replay", str(path), *app()])

    out, err = capsys.readouterr()
    assert "" == out
    assert (
        f"messagebus: {str(path)!r} is not a log of JSON lines (it holds binary data): "
        "none of its 100 lines is a JSON object\n"
    ) == err


def test_binary_lines_of_a_log_are_reported_without_their_bytes(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "app.log"
    good = record("Remind", {"user": "bob"}).encode()
    path.write_bytes(good + b"\n\x1b[2Jcleared\n\xff\xfe\x00\x01\n")

    assert 0 == main(["replay", str(path), *app()])

    err = capsys.readouterr().err
    assert [
        "line 2: not JSON (Expecting value: line 1 column 1 (char 0)): "
        "<binary data: 11 characters with control codes>",
        "line 3: not JSON ('utf-8' codec can't decode byte 0xff in position 0: invalid start "
        "byte): <binary data: 4 bytes that are not UTF-8 text>",
    ] == err.splitlines()
    assert [Remind("bob")] == handled("remind")


def test_an_empty_log_replays_nothing_and_is_no_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write(tmp_path / "rotated.log", [""])

    assert 0 == main(["replay", path, *app()])
    assert "0" == counts(capsys.readouterr().out)["replayed"]


# -- --app as a path ----------------------------------------------------------------


def test_the_app_may_be_a_python_file_given_by_its_path(
    log: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    name = f"cli_file_{uuid.uuid4().hex[:8]}"
    (tmp_path / f"{name}.py").write_text(f"from {HERE} import make_bus as factory\n")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", list(sys.path))

    assert 0 == main(["replay", log, "--app", f"./{name}.py:factory"])
    assert 2 == len(handled("register"))
    del sys.modules[name]


def test_a_python_file_in_a_package_is_imported_with_its_package(
    log: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    package = f"cli_pkg_{uuid.uuid4().hex[:8]}"
    (tmp_path / package / "entry").mkdir(parents=True)
    (tmp_path / package / "__init__.py").write_text("")
    (tmp_path / package / "entry" / "__init__.py").write_text("")
    (tmp_path / package / "wiring.py").write_text(f"from {HERE} import make_bus\n")
    (tmp_path / package / "entry" / "app.py").write_text("from ..wiring import make_bus\n")
    monkeypatch.setattr(sys, "path", list(sys.path))

    path = tmp_path / package / "entry" / "app.py"
    assert 0 == main(["replay", log, "--app", f"{path}:make_bus"])
    assert 2 == len(handled("register"))
    for module in [m for m in sys.modules if m.startswith(package)]:
        del sys.modules[module]


def test_a_missing_python_file_cannot_start(
    log: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert 2 == main(["replay", log, "--app", "./nowhere/app.py:make_bus"])
    assert "no Python file './nowhere/app.py'" in capsys.readouterr().err


@pytest.mark.parametrize(
    "argv",
    [
        ["replay", "x.log", "--no-such-option"],
        ["no-such-command"],
        ["dead-letters", "show", "seven"],
        ["dead-letters", "list", "--resolved", "--all"],
        ["dead-letters", "list", "--limit", "many"],
    ],
    ids=["unknown-option", "unknown-command", "id-not-a-number", "exclusive-options", "bad-int"],
)
def test_usage_errors_exit_two_saying_what_was_wrong(
    argv: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    assert 2 == main(argv)
    err = capsys.readouterr().err
    assert "Error:" in err
    assert "Usage: messagebus" in err


# -- the command itself -------------------------------------------------------------


def test_version_is_that_of_the_installed_distribution(
    capsys: pytest.CaptureFixture[str],
) -> None:
    import importlib.metadata

    import messagebus

    assert importlib.metadata.version("service-messagebus") == messagebus.__version__
    assert 0 == main(["--version"])
    assert f"messagebus {messagebus.__version__}\n" == capsys.readouterr().out


@pytest.mark.parametrize(
    ("argv", "shows"),
    [([], ["replay", "dead-letters", "--version"]), (["dead-letters"], ["list", "retry"])],
    ids=["messagebus", "dead-letters"],
)
def test_a_group_without_a_command_prints_its_help(
    argv: list[str], shows: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    assert 2 == main(argv)

    out, err = capsys.readouterr()
    assert out.startswith(" ".join(["Usage: messagebus", *argv, "[OPTIONS] [COMMAND]"]))
    assert all(word in out for word in shows), out
    assert "" == err


@pytest.mark.parametrize("command", ["show", "retry", "purge"])
def test_id_arguments_are_explained_in_the_help(
    command: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert 0 == main(["dead-letters", command, "--help"])

    out = capsys.readouterr().out
    assert "as `messagebus dead-letters list` shows it" in " ".join(out.split())


def test_python_dash_m_messagebus_runs_the_command() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "messagebus", "--help"],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert (0, "") == (result.returncode, result.stderr)
    assert result.stdout.startswith("Usage: messagebus [OPTIONS] [COMMAND]")


@pytest.mark.parametrize(
    ("words", "expected"),
    [
        ("messagebus ", {"replay", "dead-letters"}),
        ("messagebus dead-letters ", {"list", "show", "retry", "purge"}),
        ("messagebus replay x.log --dry", {"--dry-run"}),
    ],
)
def test_the_shell_completes_commands_and_options(
    words: str,
    expected: set[str],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("_MESSAGEBUS_COMPLETE", "bash_complete")
    monkeypatch.setenv("COMP_WORDS", words)
    monkeypatch.setenv("COMP_CWORD", str(len(words.split(" ")) - 1))

    with pytest.raises(SystemExit) as exited:
        main([])

    assert 0 == exited.value.code
    offered = {line.split(",", 1)[1] for line in capsys.readouterr().out.splitlines()}
    assert expected <= offered


def test_the_shell_completion_script_is_given_for_bash(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("_MESSAGEBUS_COMPLETE", "bash_source")

    with pytest.raises(SystemExit):
        main([])

    assert "complete -o nosort -F _messagebus_completion messagebus" in capsys.readouterr().out


def test_stdin_that_is_not_a_log_is_refused_in_one_line(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(b"caf\xe9\nbar\n")))

    assert 2 == main(["replay", "-", *app()])
    assert (
        "messagebus: stdin is not a log of JSON lines: none of its 2 lines is a JSON object\n"
    ) == capsys.readouterr().err


def test_text_that_is_not_utf_8_counts_as_binary(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "latin1.txt"
    path.write_bytes("café crème\n".encode("latin-1"))

    assert 2 == main(["replay", str(path), *app()])
    assert "(it holds binary data)" in capsys.readouterr().err
