//! The controller quorum: cluster metadata as a replicated log, run by
//! openraft on glommio.

pub mod runtime;
pub mod sync;

pub use runtime::GlommioRuntime;

#[cfg(test)]
mod tests {
    use super::GlommioRuntime;

    #[test]
    fn glommio_runtime_passes_openraft_conformance_suite() {
        openraft::testing::runtime::Suite::<GlommioRuntime>::test_all();
    }
}
