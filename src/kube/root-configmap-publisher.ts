import { ConfigMapPublisher, PUBLISHED_CONFIGMAP_LABEL, type ConfigMapPublisherOptions } from './configmap-publisher.js';

export const ROOT_CONFIGMAP = 'istio-ca-root-cert';
export const ROOT_CONFIGMAP_KEY = 'root-cert.pem';
export const ROOT_CONFIGMAP_LABEL = PUBLISHED_CONFIGMAP_LABEL;
export const ROOT_CONFIGMAPS_METRIC = 'svid_ca_root_configmaps';

export interface RootConfigMapPublisherOptions extends ConfigMapPublisherOptions {
  /** The current root bundle PEM (authority.bundle.rootsPem). */
  roots: () => string;
}

/**
 * Keeps ConfigMap istio-ca-root-cert (key root-cert.pem, label istio.io/config=true) equal to the
 * current root bundle in every namespace, as istiod's NamespaceController does when istiod is the CA
 * (--publish-root-configmap); progress in svid_ca_root_configmaps{state}.
 */
export class RootConfigMapPublisher extends ConfigMapPublisher {
  constructor(o: RootConfigMapPublisherOptions) {
    super({ name: ROOT_CONFIGMAP, key: ROOT_CONFIGMAP_KEY, metric: ROOT_CONFIGMAPS_METRIC, label: 'root', contentName: 'root bundle', content: o.roots }, o);
  }
}
