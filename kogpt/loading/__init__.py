"""Loading: find and check a checkpoint, read its weights, and the CPU kernels they run on."""
