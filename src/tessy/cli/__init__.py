"""Command-line interface: one thin module per command over the library (`tessy --help`)."""
