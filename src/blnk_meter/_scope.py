"""Customer scopes: who pays for the OpenAI calls made in a block of code.

A scope lives in a context variable, so it follows the code through nested
calls, ``asyncio`` tasks (which copy the context when created) and
``contextvars.copy_context().run``. The innermost scope wins.

A generator runs in the context of the code that advances it, so a
``with metered(...)`` block around a ``yield`` stays in force for that code
until the block ends, as ``contextlib.contextmanager`` relies on. A scope
entered by a ``with`` statement in a generator is identified by the
generator's frame, so leaving a block removes only its own scope, even when
blocks of other generators were entered after it.
"""

from __future__ import annotations

import functools
import inspect
import re
import sys
from collections.abc import AsyncGenerator, Callable, Coroutine, Generator, Mapping
from contextvars import ContextVar
from dataclasses import dataclass, field
from types import FrameType, TracebackType
from typing import TYPE_CHECKING, Any, TypeVar, cast

from ._posting import check_scope_metadata_key
from .errors import ConfigurationError, InvalidCustomerError

if TYPE_CHECKING:
    from ._meter import Meter

__all__ = ["CustomerSpec", "Scope", "current_scope", "metered", "validate_customer"]

F = TypeVar("F", bound=Callable[..., Any])

CustomerSpec = str | int | Callable[..., str | int | None] | None
"""A customer id, or a callable that receives the decorated function's
arguments and returns the customer id (``None`` means "use the enclosing
scope")."""

_CUSTOMER_PATTERN = re.compile(r"[A-Za-z0-9._@+\-]{1,128}")

_current: ContextVar[Scope | None] = ContextVar("blnk_meter_scope", default=None)

_GENERATOR_FLAGS = inspect.CO_GENERATOR | inspect.CO_ASYNC_GENERATOR


@dataclass(frozen=True)
class Scope:
    """The billing context of the code running now.

    Attributes:
        customer: the customer id that pays, or ``None`` when the scope only
            adds metadata or picks a meter.
        meter: the meter that bills calls in this scope; ``None`` means the
            enclosing scope's meter, or the default meter.
        metadata: extra ``meta_data`` entries for the postings of this scope.
    """

    customer: str | None
    meter: Meter | None = None
    metadata: Mapping[str, str] = field(default_factory=dict)
    # The scope that was active when this one was entered, and the metered
    # object that entered it, so leaving it restores the right scope.
    _parent: Scope | None = field(default=None, repr=False, compare=False)
    _owner: object = field(default=None, repr=False, compare=False)
    # The generator frame whose ``with`` statement entered this scope, if
    # any, and the scope as declared, before the enclosing one was merged in.
    _frame: FrameType | None = field(default=None, repr=False, compare=False)
    _declared: Scope | None = field(default=None, repr=False, compare=False)


def current_scope() -> Scope | None:
    """Return the innermost active scope, or ``None`` outside any scope."""
    return _current.get()


def validate_customer(customer: object) -> str:
    """Check a customer id and return it as a string.

    Customer ids appear in ledger references and wallet indicators, so they
    are limited to 1-128 letters, digits and ``. _ @ + -``. Integers are
    accepted and converted.

    Raises:
        InvalidCustomerError: the id is empty, too long, not a string or an
            integer, or contains other characters such as whitespace.
    """
    if isinstance(customer, int) and not isinstance(customer, bool):
        customer = str(customer)
    if not isinstance(customer, str):
        raise InvalidCustomerError(
            f"customer id {customer!r} is a {type(customer).__name__}; "
            "pass a string or an integer such as your database key"
        )
    if not _CUSTOMER_PATTERN.fullmatch(customer):
        raise InvalidCustomerError(
            f"invalid customer id {customer!r}: use 1-128 letters, digits or "
            "'. _ @ + -' (no spaces), for example your database key"
        )
    return customer


def _stack(
    declared: Scope, parent: Scope | None, owner: object, frame: FrameType | None
) -> Scope:
    """Put ``declared`` on top of ``parent``, merging in the values of ``parent``.

    Values of ``declared`` win; metadata keys are combined.
    """
    customer, meter, metadata = declared.customer, declared.meter, declared.metadata
    if parent is not None:
        if customer is None:
            customer = parent.customer
        if meter is None:
            meter = parent.meter
        metadata = {**parent.metadata, **metadata}
    return Scope(
        customer=customer,
        meter=meter,
        metadata=metadata,
        _parent=parent,
        _owner=owner,
        _frame=frame,
        _declared=declared,
    )


def _without(top: Scope, owner: object, frame: FrameType | None) -> Scope | None:
    """Return the chain ``top`` without the scope ``owner`` entered from ``frame``.

    Without such a scope (a block entered and left from different frames, as
    ``contextlib.ExitStack`` does), the innermost scope of ``owner`` goes.
    The scopes entered after it are stacked again on what lies below it.
    Returns ``top`` unchanged when ``owner`` has no scope in the chain.
    """
    chain: list[Scope] = []
    scope: Scope | None = top
    while scope is not None:
        chain.append(scope)
        scope = scope._parent
    mine = [index for index, entered in enumerate(chain) if entered._owner is owner]
    if not mine:
        return top
    exact = [index for index in mine if chain[index]._frame is frame]
    position = (exact or mine)[0]
    above, scope = chain[:position], chain[position]
    rebuilt = scope._parent
    for entered in reversed(above):
        declared = entered._declared or entered
        rebuilt = _stack(declared, rebuilt, entered._owner, entered._frame)
    return rebuilt


class metered:
    """Bill the OpenAI calls made inside a function or block to one customer.

    Use it as a decorator on functions, coroutines, generators, async
    generators and methods, or as a context manager::

        @metered(customer=lambda user, question: user.id)
        def answer(user, question): ...

        with metered(customer="acme"):
            client.responses.create(...)

    Args:
        customer: the customer id; or a callable that receives the decorated
            function's arguments and returns the id (``None`` falls back to
            the enclosing scope); or ``None`` to keep the enclosing customer.
        meter: the meter that bills calls in this scope; defaults to the
            enclosing scope's meter, then to the default meter.
        metadata: extra string entries copied into the ``meta_data`` of every
            posting made in this scope. Keys start with a letter and use
            letters, digits and underscores; the keys blnk_meter and Blnk
            write themselves (``customer``, ``cost``, ``sequence``, ...) are
            reserved.

    Raises:
        InvalidCustomerError: when the scope is entered with an invalid id.
        ConfigurationError: a metadata key is reserved.
    """

    def __init__(
        self,
        customer: CustomerSpec = None,
        *,
        meter: Meter | None = None,
        metadata: Mapping[str, str] | None = None,
    ) -> None:
        if customer is not None and not callable(customer):
            customer = validate_customer(customer)
        if meter is not None:
            from ._meter import Meter

            if not isinstance(meter, Meter):
                raise ConfigurationError(
                    f"meter={meter!r} is a {type(meter).__name__}; pass a Meter"
                )
        if metadata is not None and not isinstance(metadata, Mapping):
            raise ConfigurationError(
                f"metadata={metadata!r} is a {type(metadata).__name__}; pass a "
                'dict of strings such as {"feature": "search"}'
            )
        self._customer = customer
        self._meter = meter
        self._metadata = _check_metadata(metadata or {})

    def __repr__(self) -> str:
        return f"metered(customer={self._customer!r})"

    def _scope_for(
        self,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        frame: FrameType | None = None,
    ) -> Scope:
        customer = self._customer
        if callable(customer):
            resolved = self._call_customer(customer, args, kwargs)
            customer = None if resolved is None else validate_customer(resolved)
        declared = Scope(customer=customer, meter=self._meter, metadata=self._metadata)
        return _stack(declared, _current.get(), self, frame)

    def _call_customer(
        self,
        customer: Callable[..., Any],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
    ) -> Any:
        """Call the customer callable with the arguments exactly as passed.

        Raises:
            InvalidCustomerError: the callable raised; the cause is chained.
        """
        try:
            return customer(*args, **kwargs)
        except Exception as exc:
            name = getattr(customer, "__qualname__", repr(customer))
            raise InvalidCustomerError(
                f"the customer callable {name} of @metered raised "
                f"{type(exc).__name__}: {exc}; fix it to return a customer id, "
                "or None to use the enclosing scope's customer"
            ) from exc

    # Context manager -----------------------------------------------------

    def __enter__(self) -> Scope:
        return self._enter(sys._getframe(1))

    def _enter(self, frame: FrameType | None) -> Scope:
        if callable(self._customer):
            raise TypeError(
                "metered(customer=<callable>) can only decorate a function; "
                "as a context manager pass the customer id itself"
            )
        scope = self._scope_for((), {}, _generator_frame(frame))
        _current.set(scope)
        return scope

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self._exit(sys._getframe(1))

    def _exit(self, frame: FrameType | None) -> None:
        # The block's own scope is found by its owner and frame rather than
        # by a token, because a block inside a generator may be left in
        # another context, with other generators' scopes entered after it.
        top = _current.get()
        if top is not None:
            _current.set(_without(top, self, _generator_frame(frame)))

    async def __aenter__(self) -> Scope:
        # The frame of the ``async with`` statement, under this coroutine's.
        return self._enter(sys._getframe(1))

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self._exit(sys._getframe(1))

    # Decorator -----------------------------------------------------------

    def __call__(self, func: F) -> F:
        if isinstance(func, (staticmethod, classmethod)):
            # Decorated above the descriptor: meter the function it wraps.
            return cast(F, type(func)(self(func.__func__)))
        if inspect.isasyncgenfunction(func):
            return cast(F, self._wrap_async_generator(func))
        if inspect.isgeneratorfunction(func):
            return cast(F, self._wrap_generator(func))
        if inspect.iscoroutinefunction(func):
            return cast(F, self._wrap_coroutine(func))
        if not callable(func):
            raise TypeError(
                f"metered() decorates callables, not {func!r}. If this is a call "
                "of a function decorated with a bare @metered, write "
                "@metered(customer=...) instead"
            )
        return cast(F, self._wrap_function(func))

    def _wrap_function(self, func: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(func)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            scope = self._scope_for(args, kwargs)
            token = _current.set(scope)
            try:
                result = func(*args, **kwargs)
            finally:
                _current.reset(token)
            return _scoped_result(result, scope)

        return wrapper

    def _wrap_coroutine(self, func: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(func)
        async def wrapper(*args: Any, **kwargs: Any) -> Any:
            token = _current.set(self._scope_for(args, kwargs))
            try:
                return await func(*args, **kwargs)
            finally:
                _current.reset(token)

        return wrapper

    def _wrap_generator(self, func: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(func)
        def wrapper(*args: Any, **kwargs: Any) -> Generator[Any, Any, Any]:
            scope = self._scope_for(args, kwargs)
            return _scoped_generator(func(*args, **kwargs), scope)

        return wrapper

    def _wrap_async_generator(self, func: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(func)
        def wrapper(*args: Any, **kwargs: Any) -> AsyncGenerator[Any, Any]:
            scope = self._scope_for(args, kwargs)
            return _scoped_async_generator(func(*args, **kwargs), scope)

        return wrapper


def _generator_frame(frame: FrameType | None) -> FrameType | None:
    """Return ``frame`` if it runs a generator, whose blocks may interleave."""
    if frame is not None and frame.f_code.co_flags & _GENERATOR_FLAGS:
        return frame
    return None


def _check_metadata(metadata: Mapping[str, str]) -> dict[str, str]:
    checked: dict[str, str] = {}
    for key, value in metadata.items():
        if not isinstance(key, str) or not re.fullmatch(r"[A-Za-z][A-Za-z0-9_]*", key):
            raise ConfigurationError(
                f"invalid metadata key {key!r}: start with a letter and use "
                "letters, digits and underscores, so ledger filters can query it"
            )
        if not isinstance(value, str):
            raise ConfigurationError(
                f"metadata value for {key!r} is {value!r}; pass a string"
            )
        check_scope_metadata_key(key)
        checked[key] = value
    return checked


def _scoped_result(result: Any, scope: Scope) -> Any:
    """Keep ``scope`` for a coroutine or generator a plain function returned.

    A function wrapped by another decorator may look synchronous and still
    return one; its body runs only when it is awaited or iterated.
    """
    if inspect.iscoroutine(result):
        return _scoped_coroutine(result, scope)
    if inspect.isgenerator(result):
        return _scoped_generator(result, scope)
    if inspect.isasyncgen(result):
        return _scoped_async_generator(result, scope)
    return result


async def _scoped_coroutine(coroutine: Coroutine[Any, Any, Any], scope: Scope) -> Any:
    token = _current.set(scope)
    try:
        return await coroutine
    finally:
        _current.reset(token)


def _scoped_generator(
    gen: Generator[Any, Any, Any], scope: Scope
) -> Generator[Any, Any, Any]:
    """Run each step of ``gen`` inside its own scope, in any thread or task.

    The scope the generator body leaves behind after a step (for example one
    it opened with ``with metered(...)``) is the one its next step starts in.
    """
    inner: Scope | None = scope
    to_send: Any = None
    to_throw: BaseException | None = None
    while True:
        outer = _current.get()
        _current.set(inner)
        try:
            if to_throw is not None:
                item = gen.throw(to_throw)
            else:
                item = gen.send(to_send)
        except StopIteration as stop:
            return stop.value
        finally:
            inner = _current.get()
            _current.set(outer)
        to_send, to_throw = None, None
        try:
            to_send = yield item
        except GeneratorExit:
            outer = _current.get()
            _current.set(inner)
            try:
                gen.close()
            finally:
                _current.set(outer)
            raise
        except BaseException as exc:  # delivered into the wrapped generator
            to_throw = exc


async def _scoped_async_generator(
    agen: AsyncGenerator[Any, Any], scope: Scope
) -> AsyncGenerator[Any, Any]:
    """Run each step of ``agen`` inside its own scope; see :func:`_scoped_generator`."""
    inner: Scope | None = scope
    to_send: Any = None
    to_throw: BaseException | None = None
    while True:
        outer = _current.get()
        _current.set(inner)
        try:
            if to_throw is not None:
                item = await agen.athrow(to_throw)
            else:
                item = await agen.asend(to_send)
        except StopAsyncIteration:
            return
        finally:
            inner = _current.get()
            _current.set(outer)
        to_send, to_throw = None, None
        try:
            to_send = yield item
        except GeneratorExit:
            outer = _current.get()
            _current.set(inner)
            try:
                await agen.aclose()
            finally:
                _current.set(outer)
            raise
        except BaseException as exc:  # delivered into the wrapped generator
            to_throw = exc
