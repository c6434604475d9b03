{
  "algorithm": "ed25519",
  "key_id": "ef70c59d36a288af",
  "signed_file": "card.json",
  "signature": "GllWmOjyQka919w132kmFPNwHBo5GbKAPzaxNZbXDXvA0JTIZ1Yra+EWm8+bPXT7HjQoKaSBWV3rGvSZCgCbAQ=="
}
