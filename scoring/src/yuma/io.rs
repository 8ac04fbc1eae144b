//! JSON form of one epoch, as used by `yuma_vectors.json` and `polylith yuma`.
//!
//! Input: `{"params": {...}, "inputs": {...}}` (other top-level keys, such as a vector's
//! `asserted` or `emulator_outputs`, are ignored). Output: [`EpochOutput`] as one object.

use super::{EpochInputs, EpochOutput, EpochParams, YumaError};
use serde::{Deserialize, Serialize};

/// One epoch to run: hyperparameters and stored state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EpochCase {
    /// Subnet hyperparameters.
    pub params: EpochParams,
    /// Stored state before the epoch.
    pub inputs: EpochInputs,
}

impl EpochCase {
    /// Parses a case; errors name the offending field path (e.g. `inputs.stake[2]`).
    pub fn from_json(text: &str) -> Result<Self, YumaError> {
        let de = &mut serde_json::Deserializer::from_str(text);
        serde_path_to_error::deserialize(de).map_err(|e| YumaError::Json {
            path: e.path().to_string(),
            message: e.inner().to_string(),
        })
    }

    /// Runs the epoch.
    pub fn run(&self) -> Result<EpochOutput, YumaError> {
        super::epoch(&self.params, &self.inputs)
    }
}

impl EpochOutput {
    /// The output as one compact JSON object.
    pub fn to_json(&self) -> String {
        // Serialising plain vectors of integers and bools cannot fail; an empty object would
        // only appear if serde_json changed that.
        serde_json::to_string(self).unwrap_or_else(|_| String::from("{}"))
    }
}
