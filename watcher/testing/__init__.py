"""A real-containerd test rig: a private containerd, hand-built images, kubelet-style pods.

Synopsis::

    from watcher.testing import ContainerSpec, Pods, PrivateContainerd, mk2_labels

    with PrivateContainerd() as ctrd, Pods(ctrd) as pods:
        pod = pods.run_pod("ws-1", labels=mk2_labels("inst-1", "ws-1", "owner-1"))
        ...  # point the watcher at ctrd.address
        ctrd.kill9(); ctrd.start()  # the containerd-restart case

pytest users: ``from watcher.testing.fixtures import containerd, pods`` in a ``conftest.py``;
programs (the demo): ``watcher.testing.rig``, which imports no pytest. The fake containerd:
``watcher.testing.fake``.
Needs root, Linux, and containerd + runc + busybox-static (apt-installed when missing).
"""

from .rig import *  # noqa: F403  (the rig's names, gathered once in `rig`)
from .rig import __all__ as __all__
