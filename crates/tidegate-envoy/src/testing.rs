//! Test support: shared data with Envoy's semantics, for the modules' native tests.

use std::collections::HashMap;
use std::sync::Mutex;

use crate::shared::SharedData;

/// Envoy's shared-data semantics: a fresh token on every write, the token ignored when the key
/// is absent (and a token of 0 meaning "no token").
type Cells = (u32, HashMap<String, (Vec<u8>, u32)>);

/// One `vm_id`'s shared data, as every worker sees it.
#[derive(Debug, Default)]
pub struct EnvoyLike {
    map: Mutex<Cells>,
}

impl SharedData for EnvoyLike {
    fn get(&self, key: &str) -> Result<Option<(Vec<u8>, u32)>, String> {
        let g = self.map.lock().map_err(|e| e.to_string())?;
        Ok(g.1.get(key).cloned())
    }

    fn set(&self, key: &str, value: &[u8], cas: Option<u32>) -> Result<bool, String> {
        let mut g = self.map.lock().map_err(|e| e.to_string())?;
        g.0 += 1;
        let next = g.0;
        if let Some((_, cur)) = g.1.get(key) {
            if cas.is_some_and(|c| c != 0 && c != *cur) {
                return Ok(false);
            }
        }
        g.1.insert(key.to_owned(), (value.to_vec(), next));
        Ok(true)
    }
}
