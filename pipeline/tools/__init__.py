"""The boundary: only modules in this package start processes or open sockets."""
