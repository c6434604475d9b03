{
  "algorithm": "ed25519",
  "key_id": "ef70c59d36a288af",
  "signed_file": "card.json",
  "signature": "1BpAamdRvk1+sTJG/I+kjcP5q9d86ZnBHcfwj/MAHqK8DBCsSHRMFR4wQOXyL2Mnl/VLODq1479x7P2efIa2DQ=="
}
