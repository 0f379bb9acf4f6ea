//! Types shared by the three CRDs: references, condition helpers.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use k8s_openapi::jiff::Timestamp;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// API group of every CRD of the operator (DESIGN.md contract).
pub const GROUP: &str = "storage.garage.rs";
/// API version of every CRD of the operator.
pub const VERSION: &str = "v1alpha1";

/// A reference to a `GarageCluster` in the same namespace: buckets and keys live next to
/// the cluster they use, so a namespace boundary is also a tenancy boundary.
#[derive(Serialize, Deserialize, JsonSchema, Debug, Clone, PartialEq, Eq, Default)]
#[serde(rename_all = "camelCase")]
pub struct ClusterRef {
    /// Name of the `GarageCluster` in this namespace.
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
}

/// A reference to another object of this operator in the same namespace (e.g. a `Bucket`).
#[derive(Serialize, Deserialize, JsonSchema, Debug, Clone, PartialEq, Eq, Default)]
#[serde(rename_all = "camelCase")]
pub struct LocalRef {
    /// Name of the object in this namespace.
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
}

/// Condition types every status carries, so `kubectl wait --for=condition=Ready` works the
/// same on all three kinds.
pub mod condition {
    /// The object is fully reconciled and usable.
    pub const READY: &str = "Ready";
    /// The operator is still moving toward the desired state.
    pub const PROGRESSING: &str = "Progressing";
    /// The object works but not as asked (a refused change, missing replicas...).
    pub const DEGRADED: &str = "Degraded";
}

/// Builds a condition, keeping the previous `lastTransitionTime` when the status did not
/// change, so that `kubectl describe` shows when a state began, not when it was last seen.
#[must_use]
pub fn make_condition(
    previous: &[Condition],
    type_: &str,
    status: bool,
    reason: &str,
    message: impl Into<String>,
    generation: Option<i64>,
) -> Condition {
    let status = if status { "True" } else { "False" }.to_owned();
    let last_transition_time = previous
        .iter()
        .find(|c| c.type_ == type_ && c.status == status)
        .map_or_else(
            || Time(Timestamp::now()),
            |c| c.last_transition_time.clone(),
        );
    Condition {
        type_: type_.to_owned(),
        status,
        reason: reason.to_owned(),
        message: message.into(),
        observed_generation: generation,
        last_transition_time,
    }
}

/// Whether a condition of that type is currently `True`.
#[must_use]
pub fn is_true(conditions: &[Condition], type_: &str) -> bool {
    conditions
        .iter()
        .any(|c| c.type_ == type_ && c.status == "True")
}

/// Finds a condition by type.
#[must_use]
pub fn find<'a>(conditions: &'a [Condition], type_: &str) -> Option<&'a Condition> {
    conditions.iter().find(|c| c.type_ == type_)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transition_time_is_kept_while_status_is_unchanged() {
        let first = make_condition(&[], condition::READY, true, "Ok", "fine", Some(1));
        let again = make_condition(
            std::slice::from_ref(&first),
            condition::READY,
            true,
            "Ok",
            "still fine",
            Some(2),
        );
        assert_eq!(first.last_transition_time, again.last_transition_time);
        assert_eq!(again.observed_generation, Some(2));
        assert!(is_true(&[again], condition::READY));
    }
}
