"""OSC remote control of a separator: transports, the address space, feedback."""
