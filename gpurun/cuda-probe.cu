// configure-time check that nvcc can compile and link device code
__global__ void k(int *p) { *p = 1; }
