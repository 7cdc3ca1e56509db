//! The validation pass: the file as written ([`super::schema`]) becomes the typed
//! [`Config`], one section's validator at a time, in the file's order of dependence
//! (the admin endpoint's bind and the data ports first: every listener is checked
//! against them). The first broken rule is the error; settings that load but likely do
//! not do what was meant become warnings.

use super::Config;
use super::admin;
use super::agents;
use super::defense;
use super::error::ConfigError;
use super::fxp;
use super::listener::Listeners;
use super::origin::Origin;
use super::schema::FileConfig;
use super::state;

pub(super) fn validate(file: FileConfig, mut origin: Origin) -> Result<Config, ConfigError> {
    if file.listeners.value.is_empty() {
        return Err(ConfigError::invalid(
            "listeners",
            file.listeners.referenced.line(),
            "at least one listener is needed",
        ));
    }
    let mut warnings = Vec::new();
    let data = file.data;
    let admin_line = file.admin.bind.referenced.line();
    let admin = admin::validate(file.admin);
    data.refuse_port("admin.bind", admin_line, admin.bind.port())?;
    let defense = defense::validate(file.defense.as_ref())?;
    let agents = agents::validate(file.agents, &mut origin)?;
    let mut rules = Listeners::new(admin.bind, &data);
    let listeners = file
        .listeners
        .value
        .into_iter()
        .enumerate()
        .map(|(i, mut l)| {
            let own = l.defense.take();
            let via = l.via.take();
            let mut listener = rules.validate(i, l, &mut origin, &mut warnings)?;
            listener.defense =
                defense::validate_listener(i, &defense, own.as_ref(), &mut warnings)?;
            agents::validate_via(i, via.as_ref(), &mut listener, agents.as_ref())?;
            Ok(listener)
        })
        .collect::<Result<Vec<_>, ConfigError>>()?;
    admin::warn(&admin, &mut warnings);
    let fxp = fxp::validate(file.fxp, &mut origin, &mut warnings)?;
    let state = state::validate(file.state)?;
    Ok(Config {
        admin,
        fxp,
        state,
        limits: file.limits,
        data,
        defense,
        agents,
        listeners,
        warnings,
        origin,
    })
}
