//! The target: entity and operation, destructive operations confirmed, the custom list.

use crate::config::diagnostic::Diagnostic;
use crate::config::file::{Entity, ProfileOperation, TargetFile};
use crate::config::model::Target;
use crate::config::yaml::Node;
use std::path::Path;

pub(super) fn build_target(
    file: &Path,
    root: &Node,
    target: &TargetFile,
    diagnostics: &mut Vec<Diagnostic>,
) -> Option<Target> {
    let operation = match target.entity {
        Entity::UserProfiles => Some(target.operation.unwrap_or(ProfileOperation::UploadProfiles)),
        Entity::UserEvents | Entity::CustomList => None,
    };
    match (target.entity, &target.custom_list) {
        (Entity::CustomList, None) => diagnostics.push(
            Diagnostic::error(file, Some(root.locate("/target/entity")), "`entity: custom_list` needs a `custom_list` block")
                .with_hint("add `custom_list: { name: VIP users, uploader_email: admin@example.com, segment_mode: create }` under `target`"),
        ),
        (Entity::CustomList, Some(list)) if !crate::clevertap::rules::is_email(list.uploader_email.trim()) => diagnostics.push(
            Diagnostic::error(
                file,
                Some(root.locate("/target/custom_list/uploader_email")),
                format!("`{}` is not an email address", list.uploader_email),
            )
            .with_hint("give the email of a CleverTap user with the Admin role"),
        ),
        (Entity::UserProfiles | Entity::UserEvents, Some(_)) => diagnostics.push(
            Diagnostic::error(file, Some(root.locate_key("/target", "custom_list")), "`target.custom_list` applies only to `entity: custom_list`")
                .with_hint("remove `custom_list`, or set `entity: custom_list`"),
        ),
        _ => {}
    }
    if target.entity != Entity::UserProfiles && target.operation.is_some() {
        diagnostics.push(
            Diagnostic::error(
                file,
                Some(root.locate_key("/target", "operation")),
                "`target.operation` applies only to `entity: user_profiles`",
            )
            .with_hint("remove `operation`, or set `entity: user_profiles`"),
        );
    }
    if target.array_operation.is_some() && operation != Some(ProfileOperation::UploadProfiles) {
        diagnostics.push(
            Diagnostic::error(
                file,
                Some(root.locate_key("/target", "array_operation")),
                "`target.array_operation` applies only to `upload_profiles`",
            )
            .with_hint("only profile properties can be lists; remove `array_operation`"),
        );
    }
    let built = match operation {
        None if target.entity == Entity::CustomList => Target::CustomList,
        None => Target::Events,
        Some(ProfileOperation::UploadProfiles) => Target::Profiles {
            array_operation: target.array_operation.unwrap_or_default(),
        },
        Some(ProfileOperation::UploadDeviceTokens) => Target::DeviceTokens,
        Some(ProfileOperation::Demerge) => Target::Demerge,
        Some(ProfileOperation::UpdateSubscription) => Target::Subscriptions,
        Some(ProfileOperation::DisassociatePhone) => Target::DisassociatePhone,
        Some(ProfileOperation::DeleteProfiles) => Target::DeleteProfiles,
    };
    check_destructive(file, root, target, &built, diagnostics);
    // Returned even with errors: its own checks (the source's columns) still run, and the
    // errors keep the pipeline from loading.
    Some(built)
}

/// A destructive operation needs `confirm_destructive: true`; anything else has no use for it.
fn check_destructive(
    file: &Path,
    root: &Node,
    target: &TargetFile,
    built: &Target,
    diagnostics: &mut Vec<Diagnostic>,
) {
    let confirmed = target.confirm_destructive.unwrap_or(false);
    if built.is_destructive() && !confirmed {
        let what = match *built {
            Target::Demerge => {
                "`demerge` splits merged profiles apart again, and event data tied to them may be lost"
            }
            Target::DeleteProfiles => {
                "`delete_profiles` deletes each profile with its events and properties"
            }
            _ => {
                "`disassociate_phone` detaches each phone number from the profile that uses it as identity"
            }
        };
        diagnostics.push(
            Diagnostic::error(file, Some(root.locate("/target/operation")), format!("{what}; CleverTap cannot undo it"))
                .with_hint("add `confirm_destructive: true` under `target` to allow it, after `tapline run --dry-run` has shown which identities it affects"),
        );
    }
    if confirmed && !built.is_destructive() {
        diagnostics.push(
            Diagnostic::warning(
                file,
                Some(root.locate_key("/target", "confirm_destructive")),
                "`confirm_destructive` has no effect here",
            )
            .with_hint("only `demerge`, `disassociate_phone` and `delete_profiles` need it"),
        );
    }
}
