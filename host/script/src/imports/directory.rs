use crate::bindings::v0_2::wasmpbx::script::directory::{Device, Host, User};
use crate::convert;
use crate::engine::EventHost;

/// What a script sees of a user: (id, extension, role, has a PIN).
type UserFacts = (String, String, String, bool);

fn facts(user: &crate::config::User) -> UserFacts {
    (
        user.id.clone(),
        user.extension.clone(),
        user.role.clone(),
        user.pin.is_some(),
    )
}

fn user_to_guest((id, extension, role, has_pin): UserFacts) -> User {
    User {
        id,
        extension,
        role,
        has_pin,
    }
}

impl Host for EventHost {
    fn find_user(&mut self, id: String) -> Option<User> {
        self.answer("find-user", &id, |host| {
            host.services.config.load().user(&id).map(facts)
        })
        .map(user_to_guest)
    }

    fn find_user_by_extension(&mut self, extension: String) -> Option<User> {
        self.answer("find-user-by-extension", &extension, |host| {
            host.services
                .config
                .load()
                .user_by_extension(&extension)
                .map(facts)
        })
        .map(user_to_guest)
    }

    fn user_devices(&mut self, user_id: String) -> Vec<Device> {
        let devices = self.answer("user-devices", &user_id, |host| {
            host.services.devices.devices(&user_id)
        });
        convert::devices_to_guest(&devices)
    }
}
