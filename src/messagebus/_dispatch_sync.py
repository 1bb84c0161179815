"""The dispatch path of the sync bus.

GENERATED from ``_dispatch_async.py`` by ``scripts/generate_sync.py``: do not
edit; edit the async source and run ``make generate``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from ._attempt_sync import Outcome, Run, close_quietly, make_run, rollback_quietly
from ._context import DELIVERED, MESSAGE, Envelope, metadata_of, new_envelope
from ._core import BusCore, HandlerPlan, Shape, _redelivering, too_many_events
from .exceptions import DispatchError, NoHandlerError, NotAMessageError
from .messages import Command, Event, Message, Metadata
from .middleware import HandlerCall, Middleware, Next, new_call
from .retry import _RetryController

_NO_EVENTS: tuple[()] = ()


class SyncDispatch(BusCore):
    """Runs the handler plans of a bus, for every message given to :meth:`handle`."""

    _sleep: Callable[[float], object]

    def _build_runs(self) -> None:
        """Make each handler's runs, then each message type's handling, logged and not."""
        for plan in self._plans():
            quiet, _ = make_run(self, plan, self._links(plan, logged=False))
            logged, _ = make_run(self, plan, self._links(plan, logged=True))
            plan.runs = (quiet, logged)
        self._handlings: tuple[dict[type[Message], Run], dict[type[Message], Run]] = ({}, {})
        for index, table in enumerate(self._handlings):
            table.update((t, plan.runs[index]) for t, plan in self._commands.items())
            table.update(
                (t, self._fan_out(plans, bool(index))) for t, plans in self._events.items()
            )
        # What handle() is given: a routed event is sent (in a unit of work of its
        # own) before it is handled here; one raised by a handler is staged by its
        # attempt, and one delivered from a broker is not sent again.
        self._roots = (dict(self._handlings[0]), dict(self._handlings[1]))
        routes = self._outbox.routes() if self._outbox is not None else {}
        for message_type in routes:
            if issubclass(message_type, Event):
                for table in self._roots:
                    table[message_type] = self._sent_first(table.get(message_type))

    def handle(self, message: Message, *, metadata: Metadata | None = None) -> Any:
        """Handle a message and every event that follows from it, breadth first."""
        logged = self._gate() if self._gated else self._gate
        handling = self._roots[logged].get(message.__class__)
        if handling is None:
            return self._unhandled(message, metadata)
        envelope = new_envelope(message, None, metadata, self._time_ns)
        if self._listeners:
            self._notify(envelope)
        result, raised = handling(envelope)
        if raised:
            self._drain(raised, logged)
        return result

    def redeliver(self, message: Message, *, handler: str, metadata: Metadata | None = None) -> Any:
        """Handle a message again with one of its handlers only, e.g. a dead letter's.

        The handler runs with its retries and unit of work, and the events that
        follow are dispatched as usual. Its failure is raised (not stored again
        as a dead letter): the caller keeps the letter it is retrying.

        Raises:
            DispatchError: No handler of that name handles the message.
        """
        plan = self._redelivery_plan(message, handler)
        logged = self._gate() if self._gated else self._gate
        envelope = new_envelope(message, None, metadata, self._time_ns)
        token = _redelivering.set(True)
        try:
            if self._listeners:
                self._notify(envelope)
            result, raised = plan.runs[logged](envelope)
        finally:
            _redelivering.reset(token)  # what follows is handled (and dead-lettered) as usual
        if raised:
            self._drain(raised, logged)
        return result

    def _handle_delivered(self, message: Message, metadata: Metadata) -> Any:
        """:meth:`handle` for a message a consumer read from a broker.

        Each of its handlers that runs in a unit of work claims it in that
        unit of work's inbox first: a message delivered twice is handled once
        by each (see ``messagebus._delivery``).
        """
        logged = self._gate() if self._gated else self._gate
        handling = self._handlings[logged].get(message.__class__)
        if handling is None:
            return self._unhandled(message, metadata)
        # As handle() does, with the envelope's parent marking it delivered.
        envelope = new_envelope(message, DELIVERED, metadata, self._time_ns)
        if self._listeners:
            self._notify(envelope)
        result, raised = handling(envelope)
        if raised:
            self._drain(raised, logged)
        return result

    def send(self, command: Command[Any], *, metadata: Metadata | None = None) -> Metadata:
        """Send a routed command to the service that owns it.

        It is written to the outbox in a unit of work of its own, committed
        before this returns; a relay publishes it. From a handler, send with
        ``context.send(command)`` instead: in the handler's own transaction.

        Returns:
            The command's metadata (its id, to match a reply by).

        Raises:
            NotAMessageError: ``command`` is not a Command.
            DispatchError: The command is not routed (``Registry.route``).
        """
        if not isinstance(command, Command):
            raise NotAMessageError(command, "bus.send()")
        outbox = self._outbox
        if outbox is None or outbox.route(command.__class__) is None:
            raise DispatchError(
                f"{type(command).__qualname__} is not routed: say where it goes with "
                "registry.route(...) before sending it"
            )
        envelope = new_envelope(command, None, metadata, self._time_ns)
        self._stage_alone((), [envelope])
        return metadata_of(envelope)

    def _stage_alone(self, raised: Sequence[Envelope], sent: Sequence[Envelope]) -> None:
        """Write messages to the outbox in a unit of work of their own, committed now."""
        assert self._outbox is not None  # called only on a bus with routes,
        assert self._uow_factory is not None  # which has a unit of work
        uow = self._uow_factory()
        try:
            self._outbox.stage(uow, raised, sent)
            uow.commit()
        except BaseException as exc:
            rollback_quietly(uow, exc)
            raise
        finally:
            close_quietly(uow)

    def _sent_first(self, handling: Run | None) -> Run:
        """The handling of a routed event given to handle(): sent, then handled here."""

        def send_then_handle(envelope: Envelope) -> Outcome:
            self._stage_alone([envelope], ())
            return (None, _NO_EVENTS) if handling is None else handling(envelope)

        return send_then_handle

    def _unhandled(self, message: Message, metadata: Metadata | None) -> None:
        if isinstance(message, Event):  # an event may have no handler
            if self._listeners:
                self._notify(new_envelope(message, None, metadata, self._time_ns))
            return
        if isinstance(message, Command):
            route = self._outbox.route(message.__class__) if self._outbox else None
            if route is not None:
                raise DispatchError(
                    f"{type(message).__qualname__} is routed to {route.destination!r}: its "
                    "owner handles it; send it with bus.send(...) or context.send(...)"
                )
            raise NoHandlerError(message)
        raise NotAMessageError(message)

    def _drain(self, raised: list[Envelope], logged: bool) -> None:
        """Handle the events raised, and those they raise, breadth first.

        ``raised`` is a list of a run's own making: what is raised while it is
        handled is appended to it, and comes in its turn.
        """
        handlings = self._handlings[logged]
        if len(raised) > self._max_events:
            raise too_many_events(self._max_events, raised[-1])
        for envelope in raised:
            if self._listeners:
                self._notify(envelope)
            handling = handlings.get(envelope[MESSAGE].__class__)
            if handling is not None:
                _, more = handling(envelope)
                if more:
                    raised.extend(more)
                    if len(raised) > self._max_events:
                        raise too_many_events(self._max_events, raised[-1])

    def _fan_out(self, plans: Sequence[HandlerPlan], logged: bool) -> Run:
        """An event's handling: each of its handlers in turn, a failure isolated."""
        if all(
            p.shape is Shape.NOTHING and not p.timed and not self._links(p, logged) for p in plans
        ):
            return self._fan_out_bare(plans)
        runs = [plan.runs[logged] for plan in plans]

        def fan_out(envelope: Envelope) -> Outcome:
            every: list[Envelope] = []
            for run in runs:
                try:
                    _, raised = run(envelope)
                except Exception:  # given up: logged and stored by _retry; isolated here
                    continue
                if raised:
                    every.extend(raised)
            return None, every

        return fan_out

    def _fan_out_bare(self, plans: Sequence[HandlerPlan]) -> Run:
        """The same for handlers that need nothing and that nothing wraps: called directly."""
        handlers = [(plan, plan.call, make_run(self, plan, ())[1]) for plan in plans]

        def fan_out_bare(envelope: Envelope) -> Outcome:
            message = envelope[MESSAGE]
            for plan, handler, step in handlers:
                try:
                    handler(message)
                except Exception as exc:
                    call = new_call(envelope, plan.name, plan.kind)
                    try:
                        self._retry(plan, step, call, exc, None)
                    except Exception:  # given up: logged and stored; isolated here
                        continue
            return None, _NO_EVENTS

        return fan_out_bare

    def _links(self, plan: HandlerPlan, logged: bool) -> list[Middleware]:
        """The chain around a handler's attempts: listeners, success lines, the application's."""
        links: list[Middleware] = []
        if self._listeners:
            links.append(self._listening(plan))
        if logged:
            links.append(self._logging(plan))
        links.extend(self._middleware)
        return links

    def _logging(self, plan: HandlerPlan) -> Middleware:
        """The middleware that writes the line of each successful attempt."""
        log = self._log
        clock = self._perf_counter

        def log_success(call: HandlerCall, call_next: Next) -> Any:
            started = clock()
            if call._started is None:
                call._started = started
            result = call_next(call)
            log.succeeded(plan, call._envelope, call.attempt, started)
            return result

        return log_success

    def _listening(self, plan: HandlerPlan) -> Middleware:
        """The middleware that tells the listeners of each successful attempt."""
        log = self._log
        clock = self._perf_counter

        def tell_success(call: HandlerCall, call_next: Next) -> Any:
            started = call._started = clock()
            result = call_next(call)
            log.tell(plan, call._envelope, call.attempt, started, "succeeded")
            return result

        return tell_success

    def _retry(
        self,
        plan: HandlerPlan,
        step: Next,
        call: HandlerCall,
        error: Exception,
        first_started: float | None,
    ) -> Outcome:
        """After a failed attempt: log it, and try again while the policy says so.

        Failures are logged (and told to listeners) here, since only the policy
        knows whether one will be retried. Gives up by storing a dead letter
        and raising the last error. An expected outcome (``expected=``) is
        raised at once, logged as rejected, and stored nowhere.
        """
        if isinstance(error, self._expected):
            self._log.rejected(plan, call._envelope, call.attempt, call._started, error)
            raise error
        clock = self._perf_counter
        controller = _RetryController(
            plan.policy, clock() if first_started is None else first_started, error, clock
        )
        envelope = call._envelope
        log = self._log
        while True:
            wait = controller.next_wait()
            if wait is None:
                log.failed(plan, envelope, call.attempt, call._started, error)
                self._give_up(plan, envelope, call.attempt, error)
                raise error
            log.retrying(plan, envelope, call.attempt, call._started, error, wait)
            self._sleep(wait)
            controller.started()
            call.attempt += 1
            call._started = None
            try:
                result = step(call)
            except Exception as exc:
                if isinstance(exc, self._expected):
                    log.rejected(plan, envelope, call.attempt, call._started, exc)
                    raise
                error = exc
                controller.failed(exc)
                continue
            return result, call._events

    def _give_up(
        self, plan: HandlerPlan, envelope: Envelope, attempts: int, error: BaseException
    ) -> None:
        letter = self._dead_letter(plan, envelope, attempts, error)
        if letter is not None:
            assert self._dead_letters is not None
            try:
                self._dead_letters.add(letter)
            except Exception:
                self._log.store_failed(letter)
