"""First-party handler plugins, registered through ``monoq.handlers`` like any third party's."""
