// Reads a JSON array of Kubernetes objects on stdin; prints a JSON array with, per object,
// null (valid) or the schema errors. Unknown kinds are reported, never passed silently.
import fs from "node:fs";
import { Gateway } from "@kubernetes-models/gateway-api/gateway.networking.k8s.io/v1/Gateway";
import { HTTPRoute } from "@kubernetes-models/gateway-api/gateway.networking.k8s.io/v1/HTTPRoute";
import { VirtualService } from "@kubernetes-models/istio/networking.istio.io/v1/VirtualService";
import { AuthorizationPolicy } from "@kubernetes-models/istio/security.istio.io/v1/AuthorizationPolicy";
import { RequestAuthentication } from "@kubernetes-models/istio/security.istio.io/v1/RequestAuthentication";
import { ScaledObject } from "@kubernetes-models/keda/keda.sh/v1alpha1/ScaledObject";
import { NodePool } from "@kubernetes-models/karpenter/karpenter.sh/v1/NodePool";
import { EC2NodeClass } from "@kubernetes-models/karpenter/karpenter.k8s.aws/v1/EC2NodeClass";
import { ComputeClass } from "@kubernetes-models/gke/cloud.google.com/v1/ComputeClass";

const MODELS = {
  "gateway.networking.k8s.io/v1 Gateway": Gateway,
  "gateway.networking.k8s.io/v1 HTTPRoute": HTTPRoute,
  "networking.istio.io/v1 VirtualService": VirtualService,
  "security.istio.io/v1 RequestAuthentication": RequestAuthentication,
  "security.istio.io/v1 AuthorizationPolicy": AuthorizationPolicy,
  "keda.sh/v1alpha1 ScaledObject": ScaledObject,
  "karpenter.sh/v1 NodePool": NodePool,
  "karpenter.k8s.aws/v1 EC2NodeClass": EC2NodeClass,
  "cloud.google.com/v1 ComputeClass": ComputeClass,
};

const docs = JSON.parse(fs.readFileSync(0, "utf8"));
const results = docs.map((doc) => {
  const Model = MODELS[`${doc.apiVersion} ${doc.kind}`];
  if (!Model) return `no schema for ${doc.apiVersion} ${doc.kind}`;
  try {
    new Model(doc).validate();
    return null;
  } catch (err) {
    return err.message;
  }
});
process.stdout.write(JSON.stringify(results));
