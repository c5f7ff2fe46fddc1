// Index of this invocation in a 1-D launch that the host folded into x and y (x capped at 65535
// workgroups) because a dimension may not exceed maxComputeWorkgroupsPerDimension.
fn flat_index(wid: vec3u, nwg: vec3u, lid: u32, wg: u32) -> u32 {
  return (wid.y * nwg.x + wid.x) * wg + lid;
}
