//! The static assets of the sign-in page, compiled into the binary (`static/oidc/`, see its
//! README for the DSFR version, licence and what was taken): no file is read at run time,
//! and only these names are served.

/// The DSFR release the stylesheet comes from (npm `@gouvfr/dsfr`, Etalab-2.0).
pub const DSFR_VERSION: &str = "1.15.3";

const CSS: &str = "text/css; charset=utf-8";
const JS: &str = "text/javascript; charset=utf-8";
const SVG: &str = "image/svg+xml";

/// (name under `<issuer>/static/`, content type, bytes)
pub const ASSETS: &[(&str, &str, &[u8])] = &[
    (
        "dsfr.min.css",
        CSS,
        include_bytes!("../../static/oidc/dsfr.min.css"),
    ),
    (
        "signin.css",
        CSS,
        include_bytes!("../../static/oidc/signin.css"),
    ),
    (
        "signin.js",
        JS,
        include_bytes!("../../static/oidc/signin.js"),
    ),
    (
        "icons/account-circle-fill.svg",
        SVG,
        include_bytes!("../../static/oidc/icons/account-circle-fill.svg"),
    ),
    (
        "icons/arrow-up-down-line.svg",
        SVG,
        include_bytes!("../../static/oidc/icons/arrow-up-down-line.svg"),
    ),
    (
        "icons/arrow-up-line.svg",
        SVG,
        include_bytes!("../../static/oidc/icons/arrow-up-line.svg"),
    ),
    (
        "icons/briefcase-fill.svg",
        SVG,
        include_bytes!("../../static/oidc/icons/briefcase-fill.svg"),
    ),
    (
        "icons/close-line.svg",
        SVG,
        include_bytes!("../../static/oidc/icons/close-line.svg"),
    ),
    (
        "icons/download-line.svg",
        SVG,
        include_bytes!("../../static/oidc/icons/download-line.svg"),
    ),
    (
        "icons/fr--error-fill.svg",
        SVG,
        include_bytes!("../../static/oidc/icons/fr--error-fill.svg"),
    ),
    (
        "icons/fr--info-fill.svg",
        SVG,
        include_bytes!("../../static/oidc/icons/fr--info-fill.svg"),
    ),
    (
        "icons/fr--success-fill.svg",
        SVG,
        include_bytes!("../../static/oidc/icons/fr--success-fill.svg"),
    ),
    (
        "icons/fr--theme-fill.svg",
        SVG,
        include_bytes!("../../static/oidc/icons/fr--theme-fill.svg"),
    ),
    (
        "icons/fr--warning-fill.svg",
        SVG,
        include_bytes!("../../static/oidc/icons/fr--warning-fill.svg"),
    ),
    (
        "icons/fullscreen-line.svg",
        SVG,
        include_bytes!("../../static/oidc/icons/fullscreen-line.svg"),
    ),
    (
        "icons/menu-fill.svg",
        SVG,
        include_bytes!("../../static/oidc/icons/menu-fill.svg"),
    ),
    (
        "icons/question-line.svg",
        SVG,
        include_bytes!("../../static/oidc/icons/question-line.svg"),
    ),
    (
        "icons/search-line.svg",
        SVG,
        include_bytes!("../../static/oidc/icons/search-line.svg"),
    ),
    (
        "icons/team-line.svg",
        SVG,
        include_bytes!("../../static/oidc/icons/team-line.svg"),
    ),
];

/// The asset of that name.
pub fn get(name: &str) -> Option<(&'static str, &'static [u8])> {
    ASSETS
        .iter()
        .find(|(n, _, _)| *n == name)
        .map(|(_, t, b)| (*t, *b))
}

#[cfg(test)]
mod tests {
    #[test]
    fn every_icon_the_stylesheet_names_is_served() {
        let css = String::from_utf8_lossy(
            super::get("dsfr.min.css")
                .map(|(_, b)| b)
                .unwrap_or_default(),
        );
        assert!(css.contains(super::DSFR_VERSION));
        for part in css.split("url(icons/").skip(1) {
            let name = part.split(')').next().unwrap_or_default();
            assert!(super::get(&format!("icons/{name}")).is_some(), "{name}");
        }
        assert!(super::get("../Cargo.toml").is_none());
    }
}
