"""Running GFT Studio on one machine: `gft-studio` (stack.launcher), the demo assets it creates
(stack.demo) and the start-up checks shared with the workers (stack.preflight).

Not part of the Django project: it starts the web server and the workers as child processes.
"""
