use crate::bindings::v0_2::wasmpbx::script::directory::{Device, Host, User};
use crate::convert;
use crate::engine::EventHost;

fn user_to_guest(user: &crate::config::User) -> User {
    User {
        id: user.id.clone(),
        extension: user.extension.clone(),
        role: user.role.clone(),
        has_pin: user.pin.is_some(),
    }
}

impl Host for EventHost {
    fn find_user(&mut self, id: String) -> Option<User> {
        self.services.config.load().user(&id).map(user_to_guest)
    }

    fn find_user_by_extension(&mut self, extension: String) -> Option<User> {
        self.services
            .config
            .load()
            .user_by_extension(&extension)
            .map(user_to_guest)
    }

    fn user_devices(&mut self, user_id: String) -> Vec<Device> {
        convert::devices_to_guest(&self.services.devices.devices(&user_id))
    }
}
