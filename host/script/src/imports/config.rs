use crate::bindings::v0_2::wasmpbx::script::config::Host;
use crate::engine::EventHost;

impl Host for EventHost {
    fn location_var(&mut self, name: String) -> Option<String> {
        self.answer("location-var", &name, |host| {
            let config = host.services.config.load();
            let location = config.location(host.location.as_deref()?)?;
            location.vars.get(&name).cloned()
        })
    }

    fn location_vars(&mut self) -> Vec<(String, String)> {
        self.answer("location-vars", "", |host| {
            let config = host.services.config.load();
            let Some(location) = host.location.as_deref().and_then(|l| config.location(l)) else {
                return Vec::new();
            };
            location
                .vars
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect()
        })
    }

    fn setting(&mut self, key: String) -> Option<String> {
        self.answer("setting", &key, |host| {
            host.services.config.load().script_setting(&key)
        })
    }
}
