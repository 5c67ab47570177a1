//! The image configuration as the planner evolves it, instruction by instruction.
//!
//! Config-only instructions (ENV, LABEL, WORKDIR, …) are fully resolved at plan time: there is
//! no RUN yet that could need the rootfs to decide them. Unknown fields of a base image's config
//! are kept as they came, so nothing is lost on the way through.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::{Map, Value};

/// The `config` object of an OCI image configuration, plus the fields around it that a
/// Dockerfile can change.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ConfigState {
    /// `KEY=VALUE` in order of first definition (Docker keeps that order; a redefinition
    /// replaces the value in place).
    pub env: Vec<(String, String)>,
    pub user: Option<String>,
    pub workdir: Option<String>,
    pub cmd: Option<Vec<String>>,
    pub entrypoint: Option<Vec<String>>,
    pub labels: BTreeMap<String, String>,
    pub exposed_ports: BTreeSet<String>,
    pub volumes: BTreeSet<String>,
    pub stop_signal: Option<String>,
    pub shell: Option<Vec<String>>,
    pub healthcheck: Option<Value>,
    pub onbuild: Vec<String>,
    pub author: Option<String>,
    /// The base image's whole config JSON (unknown fields and history are kept from it).
    pub base: Option<Value>,
}

impl ConfigState {
    pub fn env_get(&self, key: &str) -> Option<&str> {
        self.env
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    pub fn env_set(&mut self, key: String, value: String) {
        match self.env.iter_mut().find(|(k, _)| *k == key) {
            Some(slot) => slot.1 = value,
            None => self.env.push((key, value)),
        }
    }

    /// The shell used for shell-form CMD/ENTRYPOINT/RUN.
    pub fn shell_or_default(&self) -> Vec<String> {
        self.shell
            .clone()
            .unwrap_or_else(|| vec!["/bin/sh".to_string(), "-c".to_string()])
    }

    /// Reads the state from a base image's config JSON.
    pub fn from_image_config(config: &Value) -> ConfigState {
        let mut st = ConfigState {
            base: Some(config.clone()),
            ..Default::default()
        };
        st.author = config
            .get("author")
            .and_then(Value::as_str)
            .map(str::to_string);
        let Some(c) = config.get("config").and_then(Value::as_object) else {
            return st;
        };
        let strings = |v: Option<&Value>| -> Option<Vec<String>> {
            v.and_then(Value::as_array).map(|a| {
                a.iter()
                    .filter_map(|s| s.as_str().map(str::to_string))
                    .collect()
            })
        };
        if let Some(env) = strings(c.get("Env")) {
            for kv in env {
                let (k, v) = kv.split_once('=').unwrap_or((kv.as_str(), ""));
                st.env_set(k.to_string(), v.to_string());
            }
        }
        st.user = c
            .get("User")
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
            .map(str::to_string);
        st.workdir = c
            .get("WorkingDir")
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
            .map(str::to_string);
        st.cmd = strings(c.get("Cmd"));
        st.entrypoint = strings(c.get("Entrypoint"));
        if let Some(l) = c.get("Labels").and_then(Value::as_object) {
            for (k, v) in l {
                if let Some(v) = v.as_str() {
                    st.labels.insert(k.clone(), v.to_string());
                }
            }
        }
        if let Some(p) = c.get("ExposedPorts").and_then(Value::as_object) {
            st.exposed_ports.extend(p.keys().cloned());
        }
        if let Some(p) = c.get("Volumes").and_then(Value::as_object) {
            st.volumes.extend(p.keys().cloned());
        }
        st.stop_signal = c
            .get("StopSignal")
            .and_then(Value::as_str)
            .map(str::to_string);
        st.shell = strings(c.get("Shell"));
        st.healthcheck = c.get("Healthcheck").cloned();
        st.onbuild = strings(c.get("OnBuild")).unwrap_or_default();
        st
    }

    /// The `config` object for the image configuration. Absent fields are omitted (never
    /// `null`), so the JSON does not depend on how a value came to be empty.
    pub fn to_config_object(&self) -> Value {
        let mut c = match self
            .base
            .as_ref()
            .and_then(|b| b.get("config"))
            .and_then(Value::as_object)
        {
            Some(m) => m.clone(),
            None => Map::new(),
        };
        let mut set = |k: &str, v: Option<Value>| match v {
            Some(v) => {
                c.insert(k.to_string(), v);
            }
            None => {
                c.remove(k);
            }
        };
        let strs =
            |v: &[String]| Value::Array(v.iter().map(|s| Value::String(s.clone())).collect());
        let env: Vec<String> = self.env.iter().map(|(k, v)| format!("{k}={v}")).collect();
        set("Env", (!env.is_empty()).then(|| strs(&env)));
        set("User", self.user.clone().map(Value::String));
        set("WorkingDir", self.workdir.clone().map(Value::String));
        set("Cmd", self.cmd.as_deref().map(strs));
        set("Entrypoint", self.entrypoint.as_deref().map(strs));
        let obj_of = |set: &BTreeSet<String>| {
            Value::Object(
                set.iter()
                    .map(|k| (k.clone(), Value::Object(Map::new())))
                    .collect(),
            )
        };
        set(
            "ExposedPorts",
            (!self.exposed_ports.is_empty()).then(|| obj_of(&self.exposed_ports)),
        );
        set(
            "Volumes",
            (!self.volumes.is_empty()).then(|| obj_of(&self.volumes)),
        );
        set(
            "Labels",
            (!self.labels.is_empty()).then(|| {
                Value::Object(
                    self.labels
                        .iter()
                        .map(|(k, v)| (k.clone(), Value::String(v.clone())))
                        .collect(),
                )
            }),
        );
        set("StopSignal", self.stop_signal.clone().map(Value::String));
        set("Shell", self.shell.as_deref().map(strs));
        set("Healthcheck", self.healthcheck.clone());
        set(
            "OnBuild",
            (!self.onbuild.is_empty()).then(|| strs(&self.onbuild)),
        );
        Value::Object(c)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_through_image_config() {
        let mut st = ConfigState::default();
        st.env_set("PATH".into(), "/bin".into());
        st.env_set("A".into(), "1".into());
        st.env_set("PATH".into(), "/usr/bin".into());
        st.user = Some("app".into());
        st.labels.insert("b".into(), "2".into());
        st.exposed_ports.insert("80/tcp".into());
        let cfg = serde_json::json!({ "config": st.to_config_object(), "author": null });
        let back = ConfigState::from_image_config(&cfg);
        assert_eq!(
            back.env,
            vec![("PATH".into(), "/usr/bin".into()), ("A".into(), "1".into())]
        );
        assert_eq!(back.user.as_deref(), Some("app"));
        assert_eq!(back.labels, st.labels);
        assert_eq!(back.exposed_ports, st.exposed_ports);
    }

    #[test]
    fn keeps_unknown_base_fields() {
        let base = serde_json::json!({"config": {"Env": ["A=1"], "ArgsEscaped": true}});
        let mut st = ConfigState::from_image_config(&base);
        st.cmd = Some(vec!["x".into()]);
        let c = st.to_config_object();
        assert_eq!(c["ArgsEscaped"], Value::Bool(true));
        assert_eq!(c["Cmd"][0], "x");
    }
}
