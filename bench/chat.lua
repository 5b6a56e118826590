-- wrk script: the brief's benchmark request (a 209-byte chat body, header x-user-id).
wrk.method = "POST"
wrk.headers["content-type"] = "application/json"
wrk.headers["x-user-id"] = "bench-user"
wrk.body = '{"model":"gpt-4o","messages":[{"role":"system","content":"You are a helpful support agent."},{"role":"user","content":"Could you tell me more about the advanced Rust course schedule, please?"}],"stream":false}'
