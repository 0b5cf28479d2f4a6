"""The ADR persistence model: a private QEMU 10 with a store-tracing TCG plugin, its control
channel, and the crash states built from what the plugin kept (docs: README, power-cut model)."""
