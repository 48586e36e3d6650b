//! A record read back from a rejects file (`tapline replay`), perhaps edited by hand, checked
//! against the pipeline's target before it is sent again: the same rules as a source row.

use crate::outcome::Code;
use std::collections::HashSet;
use std::sync::Arc;

use serde_json::Value;

use super::Invalid;
use crate::clevertap::records::{self, RecordKind};
use crate::clevertap::rules;
use crate::config::model::{AccountLimits, Target};

/// What to do with a replayed record.
#[derive(Debug, PartialEq)]
pub enum Replayed {
    /// A `/1/upload` record that passed CleverTap's rules: send it as it is.
    AsIs,
    /// The fields of a flat record (demerge, subscriptions, phones, deletions, custom
    /// lists): map them
    /// like a source row's.
    Fields(Vec<(Arc<str>, Value)>),
}

/// Checks a replayed record against the target it would be sent as.
pub fn replayed(
    target: Target,
    limits: AccountLimits,
    record: &Value,
) -> Result<Replayed, Invalid> {
    let upload_kind = match target {
        Target::Profiles { .. } => Some(RecordKind::Profile),
        Target::Events => Some(RecordKind::Event),
        Target::DeviceTokens => Some(RecordKind::Token),
        Target::Demerge => {
            return match record {
                Value::String(_) => Ok(Replayed::Fields(vec![(
                    Arc::from("identity"),
                    record.clone(),
                )])),
                other => Err(Invalid::new(
                    Code::InvalidRecord,
                    format!("a replayed demerge record is an identity string, not {other}"),
                )),
            };
        }
        Target::Subscriptions
        | Target::DisassociatePhone
        | Target::DeleteProfiles
        | Target::CustomList => None,
    };
    let Some(expected) = upload_kind else {
        let Value::Object(fields) = record else {
            return Err(Invalid::new(
                Code::InvalidRecord,
                format!(
                    "a replayed {} record is a JSON object, not {record}",
                    target.noun()
                ),
            ));
        };
        return Ok(Replayed::Fields(
            fields
                .iter()
                .map(|(name, value)| (Arc::from(name.as_str()), value.clone()))
                .collect(),
        ));
    };
    let kind = records::check_record(record, &HashSet::new(), limits.event_properties).map_err(
        |violation| {
            Invalid::from(
                violation
                    .rule
                    .broken(format!("the replayed record: {}", violation.message)),
            )
        },
    )?;
    if kind != expected {
        return Err(Invalid::breaks(
            &rules::RECORD_TYPE,
            format!(
                "the replayed record is of type `{}`, but this pipeline sends {}",
                kind.name(),
                target.noun()
            ),
        ));
    }
    Ok(Replayed::AsIs)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::config::model::ArrayOperation;

    #[test]
    fn replayed_records_meet_the_target_s_rules() {
        let profiles = Target::Profiles {
            array_operation: ArrayOperation::Replace,
        };
        let profile = json!({"type": "profile", "identity": "u1", "profileData": {"Name": "A"}});
        let event = json!({"type": "event", "identity": "u1", "evtName": "Viewed", "evtData": {}});
        assert_eq!(
            replayed(profiles, AccountLimits::default(), &profile),
            Ok(Replayed::AsIs)
        );
        assert_eq!(
            replayed(Target::Events, AccountLimits::default(), &event),
            Ok(Replayed::AsIs)
        );
        let wrong = replayed(Target::Events, AccountLimits::default(), &profile).unwrap_err();
        assert!(
            wrong
                .reason
                .contains("of type `profile`, but this pipeline sends events"),
            "{wrong:?}"
        );
        let no_identity = json!({"type": "profile", "profileData": {"Name": "A"}});
        assert!(replayed(profiles, AccountLimits::default(), &no_identity).is_err());
        assert_eq!(
            replayed(Target::Demerge, AccountLimits::default(), &json!("u1")),
            Ok(Replayed::Fields(vec![(Arc::from("identity"), json!("u1"))]))
        );
        assert!(
            replayed(
                Target::Demerge,
                AccountLimits::default(),
                &json!({"identity": "u1"})
            )
            .is_err()
        );
        assert_eq!(
            replayed(
                Target::DeleteProfiles,
                AccountLimits::default(),
                &json!({"guid": "__g1"})
            ),
            Ok(Replayed::Fields(vec![(Arc::from("guid"), json!("__g1"))]))
        );
        assert!(matches!(
            replayed(Target::Subscriptions, AccountLimits::default(), &json!({"type": "email", "value": "a@b.co", "status": "Unsubscribe"})),
            Ok(Replayed::Fields(fields)) if fields.len() == 3
        ));
    }
}
