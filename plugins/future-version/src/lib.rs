//! TEST FIXTURE, never shipped: implements `discedge:policy@0.3.0`, which the host (0.1.0 and
//! 0.2.0) does not speak, so loading it must fail with a message and leave what serves untouched.

wit_bindgen::generate!({ path: "wit", world: "context-policy" });

use exports::discedge::policy::policy::{Guest, PolicyInfo};

struct Component;

impl Guest for Component {
    fn info() -> PolicyInfo {
        PolicyInfo {
            version: env!("CARGO_PKG_VERSION").into(),
            description: "Test fixture for contract version checks".into(),
            stores_context: false,
            needs_gpu: false,
        }
    }
}

export!(Component);
