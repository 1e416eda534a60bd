"""`gft`: the command-line client of the GFT Studio REST API (client.cli). No Django."""
