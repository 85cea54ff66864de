"""virtualpod: Kubernetes VirtualPods as libvirt VMs, sized and tuned by QoS class."""

__version__ = "0.1.0"
