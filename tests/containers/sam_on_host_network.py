"""Run SAM CLI with its Lambda containers on the host network (these machines have no bridge).

``sam local invoke`` starts the function's container on Docker's default network, publishes
the emulator's port 8080 on a free host port P and posts the event to 127.0.0.1:P. Publishing
needs a bridge network, which the container tests must not create (``dockerd
--bridge=none``), and SAM's ``--docker-network host`` only skips attaching a network. This
launcher changes how SAM's Lambda containers are attached and nothing else: each is created
with ``network_mode=host`` and its emulator told to listen on 127.0.0.1:P itself (its runtime
API on another free loopback port), so SAM reaches it at the address it chose. The image,
emulator, mounts, environment and event are SAM's own.

Usage (with SAM CLI's interpreter)::

    .tools/sam/bin/python tests/containers/sam_on_host_network.py local invoke ...
"""

from __future__ import annotations

import socket
import sys
from typing import Any

from docker.models.containers import ContainerCollection

#: The emulator port SAM CLI publishes (samcli Container.RAPID_PORT_CONTAINER).
EMULATOR_PORT = "8080"

_create = ContainerCollection.create


def _free_loopback_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _create_on_host_network(
    self: ContainerCollection, image: Any, command: Any = None, **kwargs: Any
) -> Any:
    labels = kwargs.get("labels") or {}
    ports = kwargs.get("ports") or {}
    if labels.get("sam.cli.container.type") == "lambda" and EMULATOR_PORT in ports:
        _interface, host_port = ports.pop(EMULATOR_PORT)
        kwargs["ports"] = ports or None
        kwargs["network_mode"] = "host"
        kwargs["entrypoint"] = [
            *kwargs["entrypoint"],
            "--runtime-interface-emulator-address",
            f"127.0.0.1:{host_port}",
            "--runtime-api-address",
            f"127.0.0.1:{_free_loopback_port()}",
        ]
    return _create(self, image, command, **kwargs)


def main() -> int:
    ContainerCollection.create = _create_on_host_network  # type: ignore[method-assign]
    from samcli.cli.main import cli

    sys.argv[0] = "sam"
    return int(cli() or 0)


if __name__ == "__main__":
    sys.exit(main())
