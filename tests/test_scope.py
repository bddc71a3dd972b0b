from __future__ import annotations

import asyncio
import contextlib
import contextvars
import functools
import threading
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest

from blnk_meter import errors
from blnk_meter._scope import current_scope, metered, validate_customer


def customer_now() -> str | None:
    scope = current_scope()
    return scope.customer if scope is not None else None


def test_scope_absent_outside_metered() -> None:
    assert current_scope() is None


def test_decorator_sets_customer_value() -> None:
    @metered(customer="acme")
    def work() -> str | None:
        return customer_now()

    assert work() == "acme"
    assert customer_now() is None


def test_decorator_customer_from_arguments() -> None:
    @metered(customer=lambda user_id, question: user_id)
    def answer(user_id: str, question: str) -> str | None:
        return customer_now()

    assert answer("cust_1", "hi") == "cust_1"
    assert answer(user_id="cust_2", question="hi") == "cust_2"


def test_decorator_integer_customer_becomes_string() -> None:
    @metered(customer=lambda account: account)
    def work(account: int) -> str | None:
        return customer_now()

    assert work(42) == "42"


def test_callable_returning_none_keeps_enclosing() -> None:
    @metered(customer=lambda user: user)
    def inner(user: str | None) -> str | None:
        return customer_now()

    with metered(customer="outer"):
        assert inner(None) == "outer"
        assert inner("inner") == "inner"


def test_nested_scopes_innermost_wins() -> None:
    seen: list[str | None] = []

    @metered(customer="inner")
    def inner() -> None:
        seen.append(customer_now())

    @metered(customer="outer")
    def outer() -> None:
        seen.append(customer_now())
        inner()
        seen.append(customer_now())

    outer()
    assert seen == ["outer", "inner", "outer"]


def test_scope_without_customer_keeps_enclosing() -> None:
    with metered(customer="acme"), metered(metadata={"feature": "search"}) as scope:
        assert scope.customer == "acme"
        assert scope.metadata == {"feature": "search"}


def test_metadata_merges_with_enclosing() -> None:
    with (
        metered(customer="a", metadata={"feature": "x", "team": "t"}),
        metered(metadata={"feature": "y"}) as scope,
    ):
        assert scope.metadata == {"feature": "y", "team": "t"}


def test_method_customer_from_self() -> None:
    class Agent:
        def __init__(self, customer: str) -> None:
            self.customer = customer

        @metered(customer=lambda self, prompt: self.customer)
        def run(self, prompt: str) -> str | None:
            return customer_now()

    assert Agent("acme").run("go") == "acme"
    assert Agent("globex").run("go") == "globex"


def test_context_manager_restores_on_error() -> None:
    with pytest.raises(RuntimeError), metered(customer="acme"):
        raise RuntimeError("boom")
    assert current_scope() is None


def test_context_manager_rejects_callable_customer() -> None:
    with (
        pytest.raises(TypeError, match="decorate a function"),
        metered(customer=lambda: "x"),
    ):
        pass


@pytest.mark.parametrize(
    "customer",
    [
        pytest.param("", id="empty"),
        pytest.param("John Smith", id="space"),
        pytest.param("a" * 129, id="too-long"),
        pytest.param("a/b", id="slash"),
        pytest.param(True, id="bool"),
        pytest.param(1.5, id="float"),
    ],
)
def test_invalid_customer_rejected(customer: Any) -> None:
    with pytest.raises(errors.InvalidCustomerError):
        validate_customer(customer)


def test_invalid_customer_from_callable_raises_at_call() -> None:
    @metered(customer=lambda name: name)
    def work(name: str) -> None:
        raise AssertionError("must not run")

    with pytest.raises(errors.InvalidCustomerError, match="'bad id'"):
        work("bad id")


def test_valid_customer_ids_accepted() -> None:
    for customer in ["acme", "cust_42", "a.b@example.com", "user+tag", "9f1c-77"]:
        assert validate_customer(customer) == customer


async def test_async_function_scope() -> None:
    @metered(customer="acme")
    async def work() -> str | None:
        await asyncio.sleep(0)
        return customer_now()

    assert await work() == "acme"
    assert customer_now() is None


async def test_scope_propagates_to_tasks() -> None:
    async def child() -> str | None:
        await asyncio.sleep(0)
        return customer_now()

    @metered(customer="acme")
    async def parent() -> list[str | None]:
        tasks = [asyncio.create_task(child()) for _ in range(3)]
        return list(await asyncio.gather(*tasks))

    assert await parent() == ["acme", "acme", "acme"]


async def test_concurrent_tasks_keep_own_customers() -> None:
    @metered(customer=lambda name: name)
    async def work(name: str) -> list[str | None]:
        seen = []
        for _ in range(5):
            await asyncio.sleep(0)
            seen.append(customer_now())
        return seen

    results = await asyncio.gather(*(work(f"c{i}") for i in range(10)))
    for i, seen in enumerate(results):
        assert seen == [f"c{i}"] * 5


async def test_shared_context_manager_across_tasks() -> None:
    shared = metered(customer="acme")

    async def use() -> str | None:
        async with shared:
            await asyncio.sleep(0)
            inner = customer_now()
        assert customer_now() is None
        return inner

    assert await asyncio.gather(*(use() for _ in range(5))) == ["acme"] * 5


def test_copy_context_carries_scope_to_thread() -> None:
    results: list[str | None] = []

    with metered(customer="acme"):
        context = contextvars.copy_context()

    thread = threading.Thread(target=lambda: results.append(context.run(customer_now)))
    thread.start()
    thread.join()
    assert results == ["acme"]


def test_generator_steps_run_in_scope() -> None:
    @metered(customer="acme")
    def stream() -> Iterator[str | None]:
        for _ in range(3):
            yield customer_now()

    gen = stream()
    assert customer_now() is None
    with metered(customer="other"):
        assert next(gen) == "acme"
        assert customer_now() == "other"
    assert list(gen) == ["acme", "acme"]


def test_generator_send_throw_close_pass_through() -> None:
    events: list[Any] = []

    @metered(customer="acme")
    def echo() -> Iterator[Any]:
        try:
            received = yield "ready"
            while True:
                try:
                    received = yield (received, customer_now())
                except ValueError as exc:
                    events.append(("caught", str(exc), customer_now()))
                    received = "recovered"
        finally:
            events.append(("closed", customer_now()))

    gen = echo()
    assert next(gen) == "ready"
    assert gen.send("one") == ("one", "acme")
    assert gen.throw(ValueError("bad")) == ("recovered", "acme")
    gen.close()
    assert events == [("caught", "bad", "acme"), ("closed", "acme")]


def test_generator_return_value_kept() -> None:
    @metered(customer="acme")
    def gen() -> Iterator[int]:
        yield 1
        return 7

    def outer() -> Iterator[int]:
        result = yield from gen()
        yield result

    assert list(outer()) == [1, 7]


async def test_async_generator_steps_run_in_scope() -> None:
    @metered(customer="acme")
    async def stream() -> AsyncIterator[str | None]:
        for _ in range(3):
            await asyncio.sleep(0)
            yield customer_now()

    seen = []
    with metered(customer="other"):
        async for customer in stream():
            seen.append(customer)
            assert customer_now() == "other"
    assert seen == ["acme", "acme", "acme"]


async def test_async_generator_close_runs_cleanup_in_scope() -> None:
    cleanup: list[str | None] = []

    @metered(customer="acme")
    async def stream() -> AsyncIterator[int]:
        try:
            yield 1
            yield 2
        finally:
            cleanup.append(customer_now())

    agen = stream()
    assert await agen.__anext__() == 1
    await agen.aclose()  # type: ignore[attr-defined]
    assert cleanup == ["acme"]


def test_metadata_rejects_bad_keys() -> None:
    with pytest.raises(errors.ConfigurationError, match="invalid metadata key"):
        metered(customer="a", metadata={"bad key": "x"})
    with pytest.raises(errors.ConfigurationError, match="pass a string"):
        metered(customer="a", metadata={"n": 1})  # type: ignore[dict-item]


@pytest.mark.parametrize(
    "key", ["customer", "cost", "total_tokens", "sequence", "atomic"]
)
def test_metadata_rejects_reserved_keys(key: str) -> None:
    with pytest.raises(errors.ConfigurationError, match="reserved"):
        metered(customer="a", metadata={key: "x"})


def test_generator_inner_scope_survives_yield() -> None:
    @metered(customer="outer")
    def gen() -> Iterator[str | None]:
        with metered(customer="inner", metadata={"feature": "search"}):
            yield customer_now()
            scope = current_scope()
            yield scope.metadata.get("feature") if scope else None
        yield customer_now()

    assert list(gen()) == ["inner", "search", "outer"]
    assert current_scope() is None


def test_generator_inner_scope_across_threads() -> None:
    @metered(customer="outer")
    def gen() -> Iterator[str | None]:
        with metered(customer="inner"):
            yield customer_now()
            yield customer_now()
        yield customer_now()

    stream = gen()
    seen = [next(stream)]
    errors_seen: list[BaseException] = []

    def finish() -> None:
        try:
            seen.extend(stream)
        except BaseException as exc:
            errors_seen.append(exc)

    thread = threading.Thread(target=finish)
    thread.start()
    thread.join()

    assert errors_seen == []
    assert seen == ["inner", "inner", "outer"]
    assert current_scope() is None


async def test_async_generator_inner_scope_across_tasks() -> None:
    @metered(customer="outer")
    async def agen() -> AsyncIterator[str | None]:
        async with metered(customer="inner"):
            yield customer_now()
            await asyncio.sleep(0)
            yield customer_now()
        yield customer_now()

    stream = agen()
    first = await asyncio.create_task(stream.__anext__())
    rest = await asyncio.create_task(_collect(stream))

    assert [first, *rest] == ["inner", "inner", "outer"]
    assert current_scope() is None


async def _collect(stream: AsyncIterator[str | None]) -> list[str | None]:
    return [item async for item in stream]


def test_exit_in_other_context_harmless() -> None:
    block = metered(customer="acme")
    block.__enter__()
    context = contextvars.copy_context()
    block.__exit__(None, None, None)

    context.run(block.__exit__, None, None, None)

    assert current_scope() is None
    assert context.run(current_scope) is None


# Blocks inside undecorated generators ----------------------------------------


def test_generator_block_covers_consumer() -> None:
    def blocked() -> Iterator[str | None]:
        with metered(customer="inner"):
            yield customer_now()
        yield customer_now()

    with metered(customer="outer"):
        stream = blocked()
        seen = [next(stream), customer_now(), next(stream), customer_now()]

    assert seen == ["inner", "inner", "outer", "outer"]
    assert current_scope() is None


def test_context_manager_generator_scopes_its_body() -> None:
    @contextlib.contextmanager
    def as_customer(customer: str) -> Iterator[None]:
        with metered(customer=customer):
            yield

    with metered(customer="consumer"):
        with as_customer("acme"):
            inside = customer_now()
        after = customer_now()

    assert (inside, after) == ("acme", "consumer")
    assert current_scope() is None


async def test_async_generator_block_reaches_its_tasks() -> None:
    async def report() -> str | None:
        await asyncio.sleep(0)
        return customer_now()

    async def agen() -> AsyncIterator[list[str | None]]:
        async with metered(customer="acme"):
            yield list(await asyncio.gather(report(), asyncio.to_thread(customer_now)))

    async with metered(customer="consumer"):
        seen = [batch async for batch in agen()]

    assert seen == [["acme", "acme"]]
    assert current_scope() is None


def test_leaving_generator_block_keeps_later_one() -> None:
    def blocked(customer: str) -> Iterator[str | None]:
        with metered(customer=customer):
            yield customer_now()
            yield customer_now()
        yield customer_now()

    with metered(customer="consumer"):
        first, second = blocked("x1"), blocked("x2")
        seen = [next(first), next(second), next(first), next(first)]
        seen += [next(second), next(second)]

    # Undecorated blocks form one stack in the consumer's context, so the
    # second block, entered last, wins until it ends. Leaving the first
    # block must not end the second one.
    assert seen == ["x1", "x2", "x2", "x2", "x2", "consumer"]
    assert current_scope() is None


def test_exit_stack_leaves_its_block() -> None:
    with contextlib.ExitStack() as stack:
        stack.enter_context(metered(customer="acme"))
        inside = customer_now()

    assert inside == "acme"
    assert current_scope() is None


def test_leaving_first_block_keeps_second() -> None:
    first = metered(customer="a", metadata={"from_a": "1"})
    second = metered(customer=None, metadata={"from_b": "2"})
    first.__enter__()
    second.__enter__()

    first.__exit__(None, None, None)
    scope = current_scope()
    second.__exit__(None, None, None)

    assert scope is not None
    assert scope.customer is None
    assert dict(scope.metadata) == {"from_b": "2"}
    assert current_scope() is None


def test_decorator_above_method_descriptors() -> None:
    class Service:
        @metered(customer=lambda customer_id: customer_id)
        @staticmethod
        def static(customer_id: str) -> str | None:
            return customer_now()

        @metered(customer=lambda cls, customer_id: customer_id)
        @classmethod
        def of_class(cls, customer_id: str) -> str | None:
            return customer_now()

    assert Service().static("s1") == "s1"
    assert Service.static("s2") == "s2"
    assert Service().of_class("c1") == "c1"
    assert Service.of_class("c2") == "c2"


def test_customer_callable_error_names_callable() -> None:
    def customer_of(user: dict[str, str]) -> str:
        return user["id"]

    @metered(customer=customer_of)
    def work(user: dict[str, str]) -> None:
        pass

    with pytest.raises(errors.InvalidCustomerError) as excinfo:
        work({})

    assert isinstance(excinfo.value.__cause__, KeyError)
    assert "customer_of" in str(excinfo.value)
    assert "KeyError" in str(excinfo.value)


def test_bare_decorator_error_says_fix() -> None:
    def work(question: str) -> None:
        pass

    bare = metered(work)

    with pytest.raises(TypeError, match=r"@metered\(customer=\.\.\.\)"):
        bare("question")  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "settings",
    [
        pytest.param({"meter": "not a meter"}, id="meter"),
        pytest.param({"metadata": "feature=search"}, id="metadata"),
        pytest.param({"metadata": [("feature", "search")]}, id="metadata-pairs"),
    ],
)
def test_bad_scope_settings_rejected(settings: dict[str, Any]) -> None:
    with pytest.raises(errors.ConfigurationError) as excinfo:
        metered(customer="acme", **settings)

    assert repr(next(iter(settings.values()))) in str(excinfo.value)


async def test_plainly_wrapped_coroutine_keeps_scope() -> None:
    def passthrough(func: Any) -> Any:
        @functools.wraps(func)
        def call(*args: Any) -> Any:
            return func(*args)

        return call

    @metered(customer="acme")
    @passthrough
    async def work() -> str | None:
        await asyncio.sleep(0)
        return customer_now()

    pending = work()

    assert customer_now() is None
    assert await pending == "acme"
