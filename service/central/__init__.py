"""Luigi's central scheduler, as irisflow uses it to scale out over workers and hosts.

client.py   Luigi's RPC client on a kept-alive connection, reports sent in batches, reachability
luigid.py   `irisflow-luigid`: Luigi's server plus batched RPCs, batched task history, a fast prune
worker.py   `irisflow worker`: an assistant worker that runs whatever irisflow work luigid has pending
"""
