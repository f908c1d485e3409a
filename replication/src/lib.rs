//! Replication (not built yet): the per-partition leader/follower state
//! machine with ISR, high watermark and leader epochs, the rkyv-framed TCP
//! links between nodes, and the glue to the controller quorum (openraft).
