"""``SyncClient``: the same calls as :class:`Client`, for code without an event loop."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterable, Iterator
from types import TracebackType
from typing import Self, TypeVar

from ._channel import DEFAULT_TIMEOUT, RetryConfig
from ._client import Client, RunPage, Workflow
from ._inspection import HealthReport, RunExplanation
from ._operations import Checkpoint
from ._types import Run, RunChange, RunState, Validation

__all__ = ["SyncClient"]

_T = TypeVar("_T")


class SyncClient:
    """A thin blocking wrapper of :class:`Client`: each call runs the async one on a private
    event loop, so results, errors, deadlines and retries are exactly the async client's.

    ``with SyncClient.connect("127.0.0.1:50051") as client: run = client.run(spec)``. Not for
    use inside a running event loop (use :class:`Client` there) nor from several threads at once.
    """

    def __init__(self, runner: asyncio.Runner, client: Client) -> None:
        self._runner = runner
        self._client = client
        self._closed = False

    @classmethod
    def connect(
        cls,
        address: str | None = None,
        *,
        timeout: float = DEFAULT_TIMEOUT,
        retry: RetryConfig | None = None,
    ) -> Self:
        """Connect as :meth:`Client.connect` does (same arguments)."""
        runner = asyncio.Runner()
        try:
            client = runner.run(Client.connect(address, timeout=timeout, retry=retry))
        except BaseException:
            runner.close()
            raise
        return cls(runner, client)

    @property
    def address(self) -> str:
        """The resolver's ``HOST:PORT``."""
        return self._client.address

    def _iterate(self, items: AsyncIterator[_T]) -> Iterator[_T]:
        try:
            while True:
                try:
                    yield self._runner.run(anext(items))  # type: ignore[arg-type]
                except StopAsyncIteration:
                    return
        finally:
            self._runner.run(items.aclose())  # type: ignore[attr-defined]

    def submit(
        self,
        workflow: Workflow,
        *,
        document_format: str = "",
        request_id: str | None = None,
        allow_unregistered: bool = False,
        timeout: float | None = None,
    ) -> Run:
        """See :meth:`Client.submit`."""
        return self._runner.run(
            self._client.submit(
                workflow,
                document_format=document_format,
                request_id=request_id,
                allow_unregistered=allow_unregistered,
                timeout=timeout,
            )
        )

    def get(self, run_id: str, *, tasks: bool = True, timeout: float | None = None) -> Run:
        """See :meth:`Client.get`."""
        return self._runner.run(self._client.get(run_id, tasks=tasks, timeout=timeout))

    def cancel(
        self, run_id: str, *, request_id: str | None = None, timeout: float | None = None
    ) -> Run:
        """See :meth:`Client.cancel`."""
        return self._runner.run(self._client.cancel(run_id, request_id=request_id, timeout=timeout))

    def retry(
        self,
        run_id: str,
        *,
        from_tasks: Iterable[str] = (),
        request_id: str | None = None,
        timeout: float | None = None,
    ) -> Run:
        """See :meth:`Client.retry`."""
        call = self._client.retry(
            run_id, from_tasks=from_tasks, request_id=request_id, timeout=timeout
        )
        return self._runner.run(call)

    def checkpoint(
        self,
        run_id: str,
        *,
        label: str = "",
        request_id: str | None = None,
        timeout: float | None = None,
    ) -> Checkpoint:
        """See :meth:`Client.checkpoint`."""
        call = self._client.checkpoint(run_id, label=label, request_id=request_id, timeout=timeout)
        return self._runner.run(call)

    def checkpoints(self, run_id: str, *, timeout: float | None = None) -> list[Checkpoint]:
        """See :meth:`Client.checkpoints`."""
        return self._runner.run(self._client.checkpoints(run_id, timeout=timeout))

    def restore(
        self, checkpoint_id: str, *, request_id: str | None = None, timeout: float | None = None
    ) -> Run:
        """See :meth:`Client.restore`."""
        call = self._client.restore(checkpoint_id, request_id=request_id, timeout=timeout)
        return self._runner.run(call)

    def explain(self, run_id: str, *, timeout: float | None = None) -> RunExplanation:
        """See :meth:`Client.explain`."""
        return self._runner.run(self._client.explain(run_id, timeout=timeout))

    def health(self, *, timeout: float | None = None) -> HealthReport:
        """See :meth:`Client.health`."""
        return self._runner.run(self._client.health(timeout=timeout))

    def list_page(
        self,
        *,
        state: RunState | None = None,
        page_size: int = 0,
        page_token: str = "",
        timeout: float | None = None,
    ) -> RunPage:
        """See :meth:`Client.list_page`."""
        return self._runner.run(
            self._client.list_page(
                state=state, page_size=page_size, page_token=page_token, timeout=timeout
            )
        )

    def list(
        self, *, state: RunState | None = None, page_size: int = 0, timeout: float | None = None
    ) -> Iterator[Run]:
        """See :meth:`Client.list`: every run, pages fetched as the iteration reaches them."""
        return self._iterate(self._client.list(state=state, page_size=page_size, timeout=timeout))

    def validate(
        self,
        workflow: Workflow,
        *,
        document_format: str = "",
        allow_unregistered: bool = False,
        timeout: float | None = None,
    ) -> Validation:
        """See :meth:`Client.validate`."""
        return self._runner.run(
            self._client.validate(
                workflow,
                document_format=document_format,
                allow_unregistered=allow_unregistered,
                timeout=timeout,
            )
        )

    def watch(self, run_id: str, *, timeout: float | None = None) -> Iterator[RunChange]:
        """See :meth:`Client.watch`."""
        return self._iterate(self._client.watch(run_id, timeout=timeout))

    def wait(self, run_id: str, *, timeout: float | None = None) -> Run:
        """See :meth:`Client.wait`."""
        return self._runner.run(self._client.wait(run_id, timeout=timeout))

    def run(
        self,
        workflow: Workflow,
        *,
        request_id: str | None = None,
        allow_unregistered: bool = False,
        timeout: float | None = None,
    ) -> Run:
        """See :meth:`Client.run`."""
        return self._runner.run(
            self._client.run(
                workflow,
                request_id=request_id,
                allow_unregistered=allow_unregistered,
                timeout=timeout,
            )
        )

    def close(self) -> None:
        """Close the channel and the private event loop; safe to call twice."""
        if self._closed:
            return
        self._closed = True
        try:
            self._runner.run(self._client.close())
        finally:
            self._runner.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
