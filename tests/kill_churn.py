"""Workspace pods made and removed by many threads while containerd is SIGKILLed and
restarted: the driver shared by the tests that a watcher loses and doubles nothing across
kills (`tests/integration/test_containerd_faults.py`, `tests/integration/test_watcher_nri.py`).

Blocking (CRI calls, containerd's start): run `KillChurn.run` in a thread.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable
from functools import partial
from typing import Any

from watcher.testing import labels
from watcher.testing.containerd import PrivateContainerd
from watcher.testing.errors import CRIError
from watcher.testing.pods import Pod, Pods

#: CRI attempts per pod operation across the kills, `RETRY` seconds apart
ATTEMPTS = 120
RETRY = 0.25


class KillChurn:
    """`count` threads each create one workspace pod (odd ones then remove theirs), retrying
    CRI calls that fail while containerd is down, as the kubelet would; a killer thread
    SIGKILLs and restarts containerd `kills` times while they run, spread over the work.
    `before_kill(n)`, when given, is called (in the killer's thread) before the n-th kill,
    counted from 1: e.g. to wait until the watcher's NRI plugin has registered again, so
    that each kill is one."""

    def __init__(
        self,
        ctrd: PrivateContainerd,
        pods: Pods,
        *,
        prefix: str,
        count: int,
        kills: int,
        before_kill: Callable[[int], None] | None = None,
    ) -> None:
        self.ctrd = ctrd
        self.pods = pods
        self.prefix = prefix
        self.count = count
        self.kills = kills
        self.before_kill = before_kill
        self.cond = threading.Condition()
        self.progress = 0  # pod operations done
        self.kills_done = 0
        self.kept: dict[str, Pod] = {}  # instance id -> pod
        self.removed: dict[str, Pod] = {}
        self.abandoned: list[Pod] = []  # half-made pods of failed attempts, removed again
        self.errors: list[BaseException] = []

    def run(self) -> None:
        threads = [threading.Thread(target=self._guard, args=(self._killer,))]
        threads += [
            threading.Thread(target=self._guard, args=(self._pod, i)) for i in range(self.count)
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        if self.errors:
            raise self.errors[0]

    def _step_done(self) -> None:
        with self.cond:
            self.progress += 1
            self.cond.notify_all()

    def _retry(self, what: str, fn: Callable[[], Any]) -> Any:
        for _ in range(ATTEMPTS):
            try:
                return fn()
            except CRIError:
                time.sleep(RETRY)  # the kubelet's back-off: containerd is coming back
        raise AssertionError(f"{what}: CRI kept failing")

    def _pod(self, i: int) -> None:
        iid = f"{self.prefix}-{i}"
        for attempt in range(ATTEMPTS):
            uid = str(uuid.uuid5(uuid.NAMESPACE_OID, f"{iid}/{attempt}"))
            try:
                pod = self.pods.run_pod(
                    iid, uid=uid, labels=labels.mk2_labels(iid, f"ws-{iid}", "owner")
                )
                break
            except CRIError:
                # a half-made pod (the rig's own clean-up failed too) must go before a retry
                half = next((p for p in self.pods.pods if p.uid == uid), None)
                if half is not None:
                    self.abandoned.append(half)
                    self._retry(f"remove half-made {iid}", partial(self.pods.remove_pod, half))
                time.sleep(RETRY)
        else:
            raise AssertionError(f"{iid}: could not create it")
        self._step_done()
        if i % 2:
            self._retry(f"remove {iid}", partial(self.pods.remove_pod, pod))
            self.removed[iid] = pod
            self._step_done()
        else:
            self.kept[iid] = pod

    def _reached(self, progress: int) -> bool:
        return self.progress >= progress

    def _killer(self) -> None:
        total = self.count + self.count // 2
        for k in range(self.kills):
            if self.before_kill is not None:
                self.before_kill(k + 1)
            with self.cond:
                self.cond.wait_for(partial(self._reached, total * (k + 1) // (self.kills + 2)))
            self.ctrd.kill9()
            self.ctrd.start()
            with self.cond:
                self.kills_done += 1
                self.cond.notify_all()

    def _guard(self, fn: Callable[..., None], *args: Any) -> None:
        try:
            fn(*args)
        except BaseException as exc:
            self.errors.append(exc)
            with self.cond:
                self.progress = 10**9  # release the killer
                self.cond.notify_all()
