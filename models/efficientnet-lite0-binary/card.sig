{
  "algorithm": "ed25519",
  "key_id": "ef70c59d36a288af",
  "signed_file": "card.json",
  "signature": "XymSaRTST8FuSdntB8IVcUUooGuNtdjc7LgQ23zb4l9Wnl2uV9iBjR/l9YDZ10dd2Li8yYcFa1ZViSIFd9flCQ=="
}
