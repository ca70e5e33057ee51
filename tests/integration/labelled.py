"""What carries a label on an engine: how the tests see what a run left behind."""

from __future__ import annotations

import docker


def labelled(label: str, url: str | None = None, *, everything: bool = False) -> list[str]:
    """Names of the containers carrying *label* (``key=value``) on the engine at *url* (default:
    the local one), running or not; with *everything*, its networks and volumes too."""
    client = docker.from_env() if url is None else docker.DockerClient(base_url=url)
    flt = {"label": label}
    try:
        # ignore_removed: the run being watched removes its containers meanwhile (NotFound race).
        names = [c.name for c in client.containers.list(all=True, filters=flt,
                                                        ignore_removed=True)]
        if everything:
            names += [n.name for n in client.networks.list(filters=flt)]
            names += [v.name for v in client.volumes.list(filters=flt)]
        return names
    finally:
        client.close()
