import json
import time

while True:
    print(json.dumps({"name": "fakenerd", "time_ms": int(time.time() * 1000)}), flush=True)
    time.sleep(1)
