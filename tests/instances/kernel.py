"""Runs code in a new kernel of a compute instance through Tarn's proxy, as JupyterLab in a
browser does: POST /api/kernels, then execute_request over the kernel's websocket. Prints what
the code printed (errors as `ERROR <name>: <value>`).

    python kernel.py <lab base URL ending in /> <Tarn token> <code>
"""

import json
import sys
import urllib.request
import uuid

import websocket

base, token, code = sys.argv[1], sys.argv[2], sys.argv[3]
auth = {"Authorization": f"Bearer {token}"}
request = urllib.request.Request(
    base + "api/kernels",
    data=b"{}",
    headers={**auth, "Content-Type": "application/json"},
    method="POST",
)
kernel = json.load(urllib.request.urlopen(request, timeout=60))
ws = websocket.create_connection(
    base.replace("http", "ws", 1) + f"api/kernels/{kernel['id']}/channels",
    header=[f"Authorization: Bearer {token}"],
    timeout=60,
)
msg_id = uuid.uuid4().hex
ws.send(
    json.dumps(
        {
            "header": {
                "msg_id": msg_id,
                "msg_type": "execute_request",
                "username": "test",
                "session": uuid.uuid4().hex,
                "version": "5.3",
                "date": "",
            },
            "parent_header": {},
            "metadata": {},
            "content": {
                "code": code,
                "silent": False,
                "store_history": False,
                "user_expressions": {},
                "allow_stdin": False,
            },
            "channel": "shell",
        }
    )
)
out = []
while True:
    message = json.loads(ws.recv())
    if message.get("parent_header", {}).get("msg_id") != msg_id:
        continue
    kind = message["msg_type"]
    if kind == "stream":
        out.append(message["content"]["text"])
    elif kind == "error":
        out.append(f"ERROR {message['content']['ename']}: {message['content']['evalue']}\n")
    elif kind == "status" and message["content"]["execution_state"] == "idle":
        break
ws.close()
urllib.request.urlopen(
    urllib.request.Request(base + f"api/kernels/{kernel['id']}", headers=auth, method="DELETE"),
    timeout=30,
)
print("".join(out), end="")
