"""A TLS file server on 127.0.0.1 for the installer tests, with Python's own ssl module (not bz's TLS stack).

    https_server.py CERT KEY ROOT PORT_FILE SECONDS

Serves the files under ROOT at /files/…; /to-http/PORT/PATH answers 302 to http://127.0.0.1:PORT/PATH and
/to-https/PATH answers 302 to this server's own /files/PATH. Writes its port to PORT_FILE, and stops by itself
after SECONDS.
"""

import http.server
import os
import ssl
import sys
import threading

cert, key, root, port_file, seconds = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4], float(sys.argv[5])


class Handler(http.server.BaseHTTPRequestHandler):
    def log_message(self, *args):
        pass

    def redirect(self, to):
        self.send_response(302)
        self.send_header("Location", to)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def do_GET(self):
        path = self.path.split("?")[0]
        if path.startswith("/to-http/"):
            port, rest = path[len("/to-http/"):].split("/", 1)
            return self.redirect(f"http://127.0.0.1:{port}/{rest}")
        if path.startswith("/to-https/"):
            return self.redirect(f"https://127.0.0.1:{self.server.server_port}/files/{path[len('/to-https/'):]}")
        if path.startswith("/files/"):
            rel = os.path.normpath(path[len("/files/"):])
            full = os.path.join(root, rel)
            if not rel.startswith("..") and os.path.isfile(full):
                data = open(full, "rb").read()
                self.send_response(200)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)
                return
        self.send_response(404)
        self.send_header("Content-Length", "0")
        self.end_headers()


server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
context.load_cert_chain(cert, key)
server.socket = context.wrap_socket(server.socket, server_side=True)
threading.Timer(seconds, server.shutdown).start()
with open(port_file + ".tmp", "w") as f:
    f.write(str(server.server_port))
os.replace(port_file + ".tmp", port_file)
server.serve_forever()
