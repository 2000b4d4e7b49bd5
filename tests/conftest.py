"""Test-wide settings: a simulated 8-device CPU mesh, so sharding tests run anywhere."""

import os

os.environ.setdefault('XLA_FLAGS', '--xla_force_host_platform_device_count=8')
os.environ.setdefault('JAX_PLATFORMS', 'cpu')
