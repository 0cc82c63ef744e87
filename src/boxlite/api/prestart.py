"""Start a namespace box's slowest prerequisite, the zygote, ahead of the runtime.

The zygote is a second interpreter importing the agent (~50 ms). A front-end that knows it is
about to start a box (``boxlite run``) calls :func:`prestart_engine` before it imports the
runtime, so both interpreters load in parallel; the engine adopts the running zygote. Purely
advisory: any doubt (another engine, not root, no usable verdict) means nothing is started.
"""

from __future__ import annotations

import os


def prestart_engine(engine: str | None, home: str | None) -> bool:
    """Pre-start the zygote if a box of ``engine`` (None: ``$BOXLITE_ENGINE`` or "auto") would
    use the namespace engine; True if it did. Never raises."""
    if os.geteuid() != 0 or os.environ.get("BOXLITE_NO_PRESTART"):
        return False
    try:
        engine = engine or os.environ.get("BOXLITE_ENGINE") or "auto"
        if engine == "auto":  # namespace only when that is sure without probing or hashing
            from ..engines.vm import kvm_known

            engine = "namespace" if kvm_known(home) is False else "vm"
        if engine != "namespace":
            return False
        from ..engines.namespace.zygote import AGENT_PARENT, agent_python, prestart

        prestart(agent_python(), AGENT_PARENT)
        return True
    except Exception:  # an optimisation only: the engine starts its zygote itself when needed
        return False
