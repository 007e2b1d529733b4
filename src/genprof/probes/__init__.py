"""Probes read the machine: NVML, the PyTorch CUDA allocator and events, the host.

Each returns plain readings with units in the field names, or ``None`` with a recorded
reason when its source is absent. No threads and no storage here.
"""
