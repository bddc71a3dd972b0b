"""Customer scopes: who pays for the OpenAI calls made in a block of code.

A scope lives in a context variable, so it follows the code through nested
calls, ``asyncio`` tasks (which copy the context when created) and
``contextvars.copy_context().run``. The innermost scope wins.
"""

from __future__ import annotations

import functools
import inspect
import re
from collections.abc import AsyncGenerator, Callable, Generator, Mapping
from contextvars import ContextVar
from dataclasses import dataclass, field
from types import TracebackType
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


def _merge(outer: Scope | None, inner: Scope) -> Scope:
    """Combine a new scope with the enclosing one: inner values win."""
    if outer is None:
        return inner
    return Scope(
        customer=inner.customer if inner.customer is not None else outer.customer,
        meter=inner.meter if inner.meter is not None else outer.meter,
        metadata={**outer.metadata, **inner.metadata},
        _parent=inner._parent,
        _owner=inner._owner,
    )


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
        self._customer = customer
        self._meter = meter
        self._metadata = _check_metadata(metadata or {})

    def __repr__(self) -> str:
        return f"metered(customer={self._customer!r})"

    def _scope_for(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Scope:
        customer = self._customer
        if callable(customer):
            resolved = customer(*args, **kwargs)
            customer = None if resolved is None else validate_customer(resolved)
        outer = _current.get()
        scope = Scope(
            customer=customer,
            meter=self._meter,
            metadata=self._metadata,
            _parent=outer,
            _owner=self,
        )
        return _merge(outer, scope)

    # Context manager -----------------------------------------------------

    def __enter__(self) -> Scope:
        if callable(self._customer):
            raise TypeError(
                "metered(customer=<callable>) can only decorate a function; "
                "as a context manager pass the customer id itself"
            )
        scope = self._scope_for((), {})
        _current.set(scope)
        return scope

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        # Restore the scope that was active when this block was entered. The
        # block's own scope is found by its owner rather than by a token,
        # because a block inside a generator may be left in another context.
        scope = _current.get()
        while scope is not None and scope._owner is not self:
            scope = scope._parent
        if scope is not None:
            _current.set(scope._parent)

    async def __aenter__(self) -> Scope:
        return self.__enter__()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.__exit__(exc_type, exc, traceback)

    # Decorator -----------------------------------------------------------

    def __call__(self, func: F) -> F:
        if inspect.isasyncgenfunction(func):
            return cast(F, self._wrap_async_generator(func))
        if inspect.isgeneratorfunction(func):
            return cast(F, self._wrap_generator(func))
        if inspect.iscoroutinefunction(func):
            return cast(F, self._wrap_coroutine(func))
        if not callable(func):
            raise TypeError(f"metered() decorates callables, not {func!r}")
        return cast(F, self._wrap_function(func))

    def _wrap_function(self, func: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(func)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            token = _current.set(self._scope_for(args, kwargs))
            try:
                return func(*args, **kwargs)
            finally:
                _current.reset(token)

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
