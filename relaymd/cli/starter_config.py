"""The commented starter config `relaymd config init` writes. It validates as written: a local
cluster and file:// storage, with the real-cluster sections ready to uncomment."""

STARTER_CONFIG = """\
# RelayMD operator configuration. Every field: docs/configuration.md
# Check it with: relaymd config validate

storage:
  # Where bundles, checkpoints and outputs live. For Backblaze B2 (S3 API):
  #   url: s3://my-bucket/relaymd
  #   endpoint_url: https://s3.us-west-004.backblazeb2.com
  #   region: us-west-004
  url: file://{data_dir}/storage
  # Names of the secrets holding the S3 key pair (looked up in the secrets provider):
  # access_key_secret: RELAYMD_S3_ACCESS_KEY_ID
  # secret_key_secret: RELAYMD_S3_SECRET_ACCESS_KEY

secrets:
  # env: environment variables; file: a 0600 file of NAME=value lines; infisical: Infisical.
  provider: env
  # provider: infisical
  # infisical:
  #   project_id: 00000000-0000-0000-0000-000000000000
  #   environment: prod
  #   # machine identity read from INFISICAL_CLIENT_ID / INFISICAL_CLIENT_SECRET

clusters:
  # A profile name (clusters/<name>.yaml beside this file, in the XDG config dir, or shipped
  # with RelayMD), or a profile written inline. This one runs workers on this machine:
  - name: local
    transport: local
    scheduler: direct
    scratch: {data_dir}/scratch
    native_worker: {worker}
    max_workers: 1
    partitions:
      - name: local
        walltime_minutes: 60
        gpus_per_allocation: 0
  # A SLURM cluster behind SSH (see README "Real clusters"):
  # - name: clusterA
  #   ssh: {{host: login.clustera.example.org, username: me}}
  #   scratch: /scratch/me/relaymd
  #   setup: ["module load apptainer"]
  #   images: {{openmm: {{sif: /project/me/images/relaymd-openmm.sif}}}}
  #   partitions:
  #     - {{name: gpu, walltime_minutes: 240, gpus_per_allocation: 1, account: my-account}}

daemon:
  stale_after_s: 75       # seq unmoved this long = hung (2.5 x heartbeat_interval_s)
  retention_keep: 3       # verified checkpoints kept per job

worker:
  heartbeat_interval_s: 30
  idle_timeout_s: 600     # an idle worker exits after this, freeing the allocation
"""
