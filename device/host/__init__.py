"""The host side of the device: runs the board-side harness in child processes here, on boards
over SSH and on ARM64 under QEMU. No TensorFlow."""
