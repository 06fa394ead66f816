"""The kubelet log file name ``<pod>_<namespace>_<container>-<containerid>.log`` (the
``src=`` header value), read the same way by the forwarder and the transform.

The rule is what the API server lets kubelet write: a pod name is a DNS-1123 subdomain
(lower-case alphanumerics and ``-``, dot-separated: a static pod's name ends with its node's,
``kube-apiserver-ip-10-0-0-1.ec2.internal``), a namespace and a container name are DNS-1123
labels (no dot), the container id is 64 lower-case hex digits (Docker, containerd, CRI-O).
So no field holds ``_``, ``/`` or upper case, and every value is safe in an S3 prefix.

    >>> name = KubeletName.parse("kube-apiserver-ip-10-0-0-1.ec2.internal_kube-system_"
    ...                          "kube-apiserver-" + "0" * 64 + ".log")
    >>> name.pod, name.namespace, name.container
    ('kube-apiserver-ip-10-0-0-1.ec2.internal', 'kube-system', 'kube-apiserver')
    >>> KubeletName.parse("Web_prod_app-" + "0" * 64 + ".log") is None
    True
"""

from __future__ import annotations

import re
from dataclasses import dataclass

_LABEL = r"[a-z0-9](?:[-a-z0-9]*[a-z0-9])?"
_PATTERN = re.compile(
    rf"(?P<pod>{_LABEL}(?:\.{_LABEL})*)_(?P<namespace>{_LABEL})_(?P<container>{_LABEL})"
    r"-(?P<container_id>[a-z0-9]{64})\.log"
)


@dataclass(frozen=True, slots=True)
class KubeletName:
    """The fields of a kubelet log file name."""

    namespace: str
    pod: str
    container: str
    container_id: str

    @classmethod
    def parse(cls, name: str) -> KubeletName | None:
        """The fields of the file name `name` (a basename); None when kubelet would not
        write it."""
        match = _PATTERN.fullmatch(name)
        return cls(**match.groupdict()) if match else None

    def as_metadata(self) -> dict[str, str]:
        """The ``kubernetes`` object of a line (Fluent Bit's key names)."""
        return {
            "namespace_name": self.namespace,
            "pod_name": self.pod,
            "container_name": self.container,
            "docker_id": self.container_id,
        }

    def partition_value(self, key: str) -> str:
        """The value of one dynamic-partitioning key (namespace, pod, container, container_id)."""
        return str(getattr(self, key))
