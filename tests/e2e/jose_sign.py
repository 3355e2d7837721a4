#!/usr/bin/python3
# A grant signed with a standard JOSE library (PyJWT; Debian python3-jwt + python3-cryptography),
# as a controller would: the README and jitctl(8) show this file. Usage:
#   jose_sign.py PRIVATE_KEY.pem KID HOST_ID SOURCE [SECONDS]
import sys
import time
import uuid

import jwt

key_file, kid, host_id, source = sys.argv[1:5]
seconds = int(sys.argv[5]) if len(sys.argv) > 5 else 1800
with open(key_file, "rb") as f:
    key = f.read()  # Ed25519, PEM PKCS#8 (jitctl keygen or openssl genpkey -algorithm ed25519)
now = int(time.time())
claims = {
    "iss": "controller.example",
    "aud": host_id,
    "sub": "alice@example.com",
    "jti": uuid.uuid4().hex,
    "iat": now,
    "exp": now + seconds,
    "src": [source],
    "ports": [{"port": 22, "protocol": "tcp"}],
    "reason": "INC-1234",
}
print(jwt.encode(claims, key, algorithm="EdDSA", headers={"typ": "jit-grant+jwt", "kid": kid}))
